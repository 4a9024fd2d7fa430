"""SegViT: ATM module, ATM head, matching-free ATM loss, Shrunk (QD/QU), configs (tiny widths)."""
import os.path as osp

import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config, ConfigDict
from mmengine.structures import PixelData
from mmseg.models.backbones import VisionTransformer
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample

import mmseg_ovseg  # noqa: F401  (registers the plugin's modules)
from mmseg_ovseg.models.backbones.shrunk_vit import ShrunkVisionTransformer
from mmseg_ovseg.models.decode_heads.atm import ATMCrossAttention, ATMDecoderLayer
from mmseg_ovseg.models.layers import semantic_inference  # SegViT's rule, shared with SAN
from mmseg_ovseg.models.losses.atm_loss import ATMLoss

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
VIT = dict(img_size=(64, 64), patch_size=8, embed_dims=32, num_layers=4, num_heads=2,
           mlp_ratio=2, with_cls_token=False, final_norm=False, patch_bias=True)


def _vit(**kw):
    return VisionTransformer(**{**VIT, 'out_indices': (1, 2, 3), **kw})


def _head(num_classes=5, **kw):
    cfg = dict(type='ATMHead', in_channels=32, num_classes=num_classes, embed_dims=16,
               num_layers=2, num_heads=2, use_stages=3)
    cfg.update(kw)
    head = MODELS.build(cfg)
    head.init_weights()
    return head


def _samples(n, h, w, num_classes, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        seg = torch.randint(0, num_classes, (1, 1, h // 8 + 1, w // 8 + 1), generator=g)
        seg = F.interpolate(seg.float(), size=(h, w), mode='nearest')[0].long()
        seg[:, :3, :3] = 255
        s = SegDataSample(gt_sem_seg=PixelData(data=seg))
        s.set_metainfo(dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w)))
        out.append(s)
    return out


def _explicit_similarity(attn, query, memory):
    """Head-averaged q.k / sqrt(d), head by head, written without the module's reshapes."""
    q, k = attn.q(query), attn.k(memory)
    d = attn.head_dims
    sims = [q[..., i * d:(i + 1) * d] @ k[..., i * d:(i + 1) * d].transpose(-1, -2) / d**0.5
            for i in range(attn.num_heads)]
    return torch.stack(sims).mean(0)


def test_atm_mask_is_sigmoid_of_pre_softmax_similarity():
    attn = ATMCrossAttention(16, 4).eval()
    query, memory = torch.randn(2, 5, 16), torch.randn(2, 11, 16)
    out, mask = attn(query, memory)
    sim = _explicit_similarity(attn, query, memory)
    torch.testing.assert_close(mask, sim)
    # the token update is the ordinary softmax attention over the same similarities
    d = attn.head_dims
    q, k, v = attn.q(query), attn.k(memory), attn.v(memory)
    heads = [torch.softmax(q[..., i * d:(i + 1) * d] @ k[..., i * d:(i + 1) * d].transpose(
        -1, -2) / d**0.5, -1) @ v[..., i * d:(i + 1) * d] for i in range(4)]
    torch.testing.assert_close(out, attn.proj(torch.cat(heads, -1)))
    # the mask is not the post-softmax attention (that would sum to 1 over tokens)
    assert not torch.allclose(mask.softmax(-1).sum(-1), mask.sigmoid().sum(-1))

    layer = ATMDecoderLayer(16, 4).eval()
    x, lmask = layer(query, memory)
    pre = layer.norm1(query + layer.self_attn(query))
    torch.testing.assert_close(lmask, _explicit_similarity(layer.cross_attn, pre, memory))
    assert x.shape == query.shape

    cls, masks = torch.randn(2, 5, 4), torch.randn(2, 5, 3, 7)
    expected = sum(cls.softmax(-1)[:, i, :-1, None, None] * masks[:, i, None].sigmoid()
                   for i in range(5))
    torch.testing.assert_close(semantic_inference(cls, masks), expected)


def test_atm_layer_is_a_post_norm_transformer_decoder_layer():
    """With the ATM attention's q/k/v/proj copied into a torch MultiheadAttention, the ATM layer's
    token output equals torch's post-norm nn.TransformerDecoderLayer (the official base class)."""
    layer = ATMDecoderLayer(16, 4).eval()
    ref = torch.nn.TransformerDecoderLayer(16, 4, 64, batch_first=True).eval()
    ref.self_attn.load_state_dict(layer.self_attn.state_dict())
    ca = layer.cross_attn
    with torch.no_grad():
        ref.multihead_attn.in_proj_weight.copy_(torch.cat([ca.q.weight, ca.k.weight, ca.v.weight]))
        ref.multihead_attn.in_proj_bias.copy_(torch.cat([ca.q.bias, ca.k.bias, ca.v.bias]))
    ref.multihead_attn.out_proj.load_state_dict(ca.proj.state_dict())
    ref.linear1.load_state_dict(layer.ffn[0].state_dict())
    ref.linear2.load_state_dict(layer.ffn[3].state_dict())
    for i in (1, 2, 3):
        getattr(ref, f'norm{i}').load_state_dict(getattr(layer, f'norm{i}').state_dict())
    query, memory = torch.randn(2, 5, 16), torch.randn(2, 9, 16)
    with torch.no_grad():
        torch.testing.assert_close(layer(query, memory)[0], ref(query, memory),
                                   rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_head_levels_order_and_cumulative_masks():
    head = _head().eval()
    feats = [torch.randn(2, 32, 4, 6), torch.randn(2, 32, 4, 6), torch.randn(2, 32, 2, 3)]
    with torch.no_grad():
        cls_out, mask_out = head(feats)
        assert len(cls_out) == len(mask_out) == 3
        assert all(c.shape == (2, 5, 6) for c in cls_out)
        # masks live on the grid of the last decoded level (the first input: deepest first)
        assert all(m.shape == (2, 5, 4, 6) for m in mask_out)
        # explicit: deepest (last) input first, queries carried, masks summed cumulatively
        q = head.queries.weight.expand(2, -1, -1)
        total = 0
        for lvl, feat in enumerate(reversed(feats)):
            mem = head.proj_norm[lvl](head.input_proj[lvl](feat.flatten(2).transpose(1, 2)))
            for layer in head.decoders[lvl].layers:
                q, m = layer(q, mem)
            m = F.interpolate(m.unflatten(2, feat.shape[-2:]), size=(4, 6), mode='bilinear',
                              align_corners=False)
            total = total + m
            torch.testing.assert_close(mask_out[lvl], total)
            torch.testing.assert_close(cls_out[lvl], head.class_embed(q))
    # per-layer outputs, no summation (Shrunk's single head)
    single = _head(in_channels=16, use_stages=1, use_proj=False, per_layer_outputs=True,
                   sum_masks=False).eval()
    with torch.no_grad():
        c, m = single([torch.randn(1, 16, 3, 5)])
    assert len(c) == len(m) == 2 and m[0].shape == (1, 5, 3, 5)
    assert not torch.allclose(m[1], m[0])
    with pytest.raises(ValueError, match='levels'):
        head(feats[:2])
    with pytest.raises(ValueError, match='in_channels == embed_dims'):
        _head(use_proj=False)


def _loss_case():
    # 3 classes, one 4x4 image: class 0 on the left, class 2 on the right, ignored top row;
    # class 1 only under ignored pixels -> absent.
    label = torch.tensor([[255, 255, 255, 255],
                          [0, 0, 2, 2],
                          [0, 0, 2, 2],
                          [0, 0, 2, 2]])[None]
    torch.manual_seed(1)
    cls = torch.randn(1, 3, 4, requires_grad=True)
    masks = torch.randn(1, 3, 2, 2, requires_grad=True)
    return label, cls, masks


def test_atm_loss_fixed_assignment_on_hand_built_example():
    label, cls, masks = _loss_case()
    loss = ATMLoss()
    out = loss(cls, masks, label, ignore_index=255)
    assert set(out) == {'loss_cls', 'loss_mask', 'loss_dice'}
    # classification: query 0 -> class 0, query 1 -> no object (3), query 2 -> class 2
    w = torch.tensor([1., 1., 1., 0.1])
    torch.testing.assert_close(out['loss_cls'],
                               F.cross_entropy(cls[0], torch.tensor([0, 3, 2]), weight=w))
    # masks: queries 0 and 2 only, logits upsampled to 4x4; ignored row is a negative
    up = F.interpolate(masks, size=(4, 4), mode='bilinear', align_corners=False)[0]
    focal, dice = 0, 0
    for c in (0, 2):
        p, t = up[c].flatten(), (label[0] == c).float().flatten()
        prob = p.sigmoid()
        ce = F.binary_cross_entropy_with_logits(p, t, reduction='none')
        p_t = prob * t + (1 - prob) * (1 - t)
        focal = focal + (ce * (1 - p_t)**2 * (0.25 * t + 0.75 * (1 - t))).mean()
        dice = dice + 1 - (2 * (prob * t).sum() + 1) / (prob.sum() + t.sum() + 1)
    torch.testing.assert_close(out['loss_mask'], 20 * focal / 2)
    torch.testing.assert_close(out['loss_dice'], dice / 2)
    sum(out.values()).backward()
    assert masks.grad[0, 1].abs().sum() == 0  # absent class: no mask supervision
    assert masks.grad[0, [0, 2]].abs().sum() > 0 and cls.grad[0, 1].abs().sum() > 0

    # no matching: swapping the predictions of queries 0 and 2 changes (raises) the loss
    with torch.no_grad():
        swapped = loss(cls[:, [2, 1, 0]], masks[:, [2, 1, 0]], label, ignore_index=255)
        good = loss(torch.tensor([[[9., -9, -9, -9], [-9, -9, -9, 9], [-9, -9, 9, -9]]]),
                    (torch.stack([label[0] == 0, label[0] == 1, label[0] == 2])[None].float()
                     * 16 - 8), label, ignore_index=255)
        bad = loss(torch.tensor([[[-9., -9, 9, -9], [-9, -9, -9, 9], [9, -9, -9, -9]]]),
                   (torch.stack([label[0] == 2, label[0] == 1, label[0] == 0])[None].float()
                    * 16 - 8), label, ignore_index=255)
    assert not torch.allclose(swapped['loss_dice'], out['loss_dice'])
    assert all(good[k] < 0.05 for k in good) and all(bad[k] > 0.5 for k in bad)


def test_atm_loss_ignore_index_and_errors():
    label, cls, masks = _loss_case()
    with torch.no_grad():
        # official mode: ignored pixels are negatives, so logits there matter
        base = ATMLoss()(cls, masks, label, ignore_index=255)
        hot = masks.clone()
        hot[:, :, 0] = 30.0  # top row of the 2x2 grid -> mostly the ignored row after upsampling
        up = F.interpolate(hot, size=(4, 4), mode='bilinear', align_corners=False)
        only_ignored = F.interpolate(masks, size=(4, 4), mode='bilinear', align_corners=False)
        only_ignored[:, :, 0] = 30.0  # change predictions on ignored pixels only
        assert ATMLoss()(cls, only_ignored, label, 255)['loss_mask'] > base['loss_mask']
        # exclude_ignored: predictions on ignored pixels do not matter at all
        ex = ATMLoss(exclude_ignored=True)
        ref = ex(cls, F.interpolate(masks, size=(4, 4), mode='bilinear', align_corners=False),
                 label, 255)
        moved = ex(cls, only_ignored, label, 255)
        for k in ref:
            torch.testing.assert_close(moved[k], ref[k])
        assert ex(cls, up, label, 255)['loss_mask'] != ref['loss_mask']
        # an all-ignored image: every query is "no object", zero mask losses
        empty = ATMLoss()(cls, masks, torch.full_like(label, 255), 255)
        assert empty['loss_mask'] == 0 and empty['loss_dice'] == 0
        torch.testing.assert_close(empty['loss_cls'],
                                   F.cross_entropy(cls[0], torch.tensor([3, 3, 3])))
    with pytest.raises(ValueError, match='outside'):
        ATMLoss()(cls, masks, torch.full_like(label, 3), 255)
    with pytest.raises(ValueError, match='one query per class'):
        ATMLoss()(cls[:, :2], masks[:, :2], label, 255)


@pytest.mark.slow
def test_shrunk_vit_qd_token_counts_and_equivalence():
    torch.manual_seed(0)
    plain = _vit(out_indices=(0, 1, 2, 3))
    shrunk = ShrunkVisionTransformer(shrink_idx=2, out_indices=(0, 1, 2, 3), **VIT)
    plain.eval()  # (mmseg's ViT.train returns None: no chaining)
    shrunk.eval()
    shrunk.load_state_dict(plain.state_dict())  # same modules and keys as mmseg's ViT
    x = torch.randn(2, 3, 72, 56)  # 9 x 7 patch grid (odd)
    with torch.no_grad():
        p, s = plain(x), shrunk(x)
        assert [o.shape[-2:] for o in s] == [(9, 7), (9, 7), (5, 4), (5, 4)]
        torch.testing.assert_close(s[0], p[0])
        torch.testing.assert_close(s[1], p[1])
        # QD layer by hand: queries = tokens at even rows/cols, keys/values = all tokens
        tokens = s[1].flatten(2).transpose(1, 2)
        layer = shrunk.layers[2]
        q = s[1][:, :, ::2, ::2].flatten(2).transpose(1, 2)
        n = layer.norm1
        kv = n(tokens).transpose(0, 1)  # mmcv's attention wraps a sequence-first torch MHA
        a = layer.attn.attn(n(q).transpose(0, 1), kv, kv, need_weights=False)[0]
        a = a.transpose(0, 1) + q
        y = a + layer.ffn.layers(layer.norm2(a))
        torch.testing.assert_close(s[2], y.transpose(1, 2).reshape(2, 32, 5, 4))
        # the layer after QD is an ordinary layer on the shrunk grid
        y = shrunk.layers[3](y)
        torch.testing.assert_close(s[3], y.transpose(1, 2).reshape(2, 32, 5, 4))
    # the class token is dropped at QD (official) and out maps stay grid-shaped
    with_cls = ShrunkVisionTransformer(shrink_idx=1, out_indices=(0, 3), **{
        **VIT, 'with_cls_token': True})
    with_cls.eval()
    with torch.no_grad():
        o = with_cls(torch.randn(1, 3, 64, 64))
    assert o[0].shape == (1, 32, 8, 8) and o[1].shape == (1, 32, 4, 4)
    with pytest.raises(ValueError, match='shrink_idx'):
        ShrunkVisionTransformer(shrink_idx=4, **VIT)


@pytest.mark.slow
def test_query_upsampling_shapes_and_query_grid():
    neck = MODELS.build(dict(type='QueryUpsampling', in_channels=32, embed_dims=16,
                             query_grid=(8, 8), num_layers=2, num_heads=2, num_levels=2))
    neck.init_weights()
    neck.eval()
    f16, f32 = torch.randn(2, 32, 8, 8), torch.randn(2, 32, 4, 4)
    with torch.no_grad():
        out, = neck((f16, f32))
        assert out.shape == (2, 16, 8, 8)
        # by hand: training-size grid uses the embedding as is; level order is kept
        q = neck.queries.weight.expand(2, -1, -1)
        for lvl, f in enumerate((f16, f32)):
            mem = neck.proj_norm[lvl](neck.input_proj[lvl](f.flatten(2).transpose(1, 2)))
            q = neck.decoders[lvl](q, mem)
        torch.testing.assert_close(out, q.transpose(1, 2).reshape(2, 16, 8, 8))
        assert not torch.allclose(neck((f32, f16))[0][:, :, :4, :4], out[:, :, :4, :4])
        # other input sizes: the query grid is resized to the 1/16 grid of the input
        odd, = neck((torch.randn(1, 32, 9, 7), torch.randn(1, 32, 5, 4)))
    assert odd.shape == (1, 16, 9, 7) and neck.grid_queries((9, 7)).shape == (63, 16)


def _segvit(shrunk=False, num_classes=5):
    cfg = dict(
        type='EncoderDecoder',
        data_preprocessor=dict(type='SegDataPreProcessor', mean=[127.5] * 3, std=[127.5] * 3,
                               size_divisor=8, pad_val=0, seg_pad_val=255),
        backbone=dict(type='StrictVisionTransformer', out_indices=(1, 2, 3), **VIT),
        decode_head=dict(type='ATMHead', in_channels=32, num_classes=num_classes, embed_dims=16,
                         num_layers=2, num_heads=2, use_stages=3),
        train_cfg=dict(), test_cfg=dict(mode='whole'))
    if shrunk:
        cfg['backbone'].update(type='ShrunkVisionTransformer', shrink_idx=2, out_indices=(1, 3))
        cfg['neck'] = dict(type='QueryUpsampling', in_channels=32, embed_dims=16,
                           query_grid=(8, 8), num_layers=2, num_heads=2, num_levels=2)
        cfg['decode_head'].update(in_channels=16, use_stages=1, use_proj=False,
                                  per_layer_outputs=True, sum_masks=False)
    model = MODELS.build(ConfigDict(cfg))
    model.init_weights()
    return model


@pytest.mark.parametrize('shrunk', [False, True])
@pytest.mark.slow
def test_segmentor_gradients_and_deep_supervision(shrunk):
    model = _segvit(shrunk)
    model.train()
    data = dict(inputs=[torch.randint(0, 255, (3, 64, 64), dtype=torch.uint8)] * 2,
                data_samples=_samples(2, 64, 64, 5))
    losses = model(**model.data_preprocessor(data, True), mode='loss')
    # final output + 2 deep-supervised outputs (3 levels, or 2 per-layer outputs + final)
    aux = 1 if shrunk else 2
    assert set(losses) == {f'decode.{p}loss_{k}' for p in [''] + [f'd{i}.' for i in range(aux)]
                           for k in ('cls', 'mask', 'dice')}
    sum(losses.values()).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
    assert model.decode_head.queries.weight.grad.abs().sum() > 0
    assert model.backbone.layers[0].attn.attn.in_proj_weight.grad.abs().sum() > 0


@pytest.mark.parametrize('shrunk', [False, True])
@pytest.mark.slow
def test_predict_odd_sizes(shrunk):
    model = _segvit(shrunk).eval()
    for h, w in ((61, 75), (40, 33)):
        data = dict(inputs=[torch.randint(0, 255, (3, h, w), dtype=torch.uint8)],
                    data_samples=_samples(1, h, w, 5))
        with torch.no_grad():
            out = model.test_step(data)[0]
        assert out.seg_logits.data.shape == (5, h, w)
        assert out.pred_sem_seg.data.shape == (1, h, w)
        probs = out.seg_logits.data
        assert (probs >= 0).all() and torch.isfinite(probs).all()


@pytest.mark.parametrize('name', ['segvit_tiny_synthetic', 'segvit-shrunk_tiny_synthetic'])
@pytest.mark.slow
def test_tiny_config_builds_and_trains_a_step(name):
    cfg = Config.fromfile(osp.join(ROOT, 'configs', f'{name}.py'))
    assert cfg.model.type == 'EncoderDecoder'
    assert ('shrunk' in name) == (cfg.model.get('neck') is not None)
    model = MODELS.build(cfg.model)
    model.init_weights()
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    data = dict(inputs=[torch.randint(0, 255, (3, 128, 128), dtype=torch.uint8)] * 2,
                data_samples=_samples(2, 128, 128, num_classes=8))
    before = model.decode_head.queries.weight.detach().clone()
    losses = model(**model.data_preprocessor(data, True), mode='loss')
    loss = sum(losses.values())
    assert torch.isfinite(loss) and 'decode.d1.loss_mask' in losses
    opt.zero_grad()
    loss.backward()
    opt.step()
    assert not torch.equal(before, model.decode_head.queries.weight)
    model.eval()
    with torch.no_grad():
        out = model.test_step(dict(inputs=data['inputs'][:1],
                                   data_samples=_samples(1, 128, 128, num_classes=8)))
    assert out[0].seg_logits.data.shape == (8, 128, 128)


@pytest.mark.parametrize('name', ['segvit_vit-l16_ade20k-640x640', 'segvit_vit-l16_ade20k-512x512',
                                  'segvit-shrunk_vit-l16_ade20k-640x640'])
def test_full_configs(name):
    cfg = Config.fromfile(osp.join(ROOT, 'configs', f'{name}.py'))
    bb, head = cfg.model.backbone, cfg.model.decode_head
    assert (bb.embed_dims, bb.num_layers, bb.patch_size, bb.drop_path_rate) == (1024, 24, 16, 0.3)
    assert head.num_classes == 150 and head.num_heads == 16 and head.embed_dims == 512
    assert cfg.optim_wrapper.optimizer.lr == 2e-5 and cfg.train_cfg.max_iters == 160000
    assert cfg.train_dataloader.batch_size == 2
    assert cfg.model.test_cfg.crop_size == cfg.crop_size == cfg.model.backbone.img_size
    if 'shrunk' in name:
        assert bb.type == 'ShrunkVisionTransformer' and bb.out_indices == (7, 23)
        assert cfg.model.neck.query_grid == (40, 40)
    else:
        assert bb.type == 'StrictVisionTransformer' and bb.out_indices == (7, 15, 23)
