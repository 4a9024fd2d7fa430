"""SAN at tiny widths: point sampling, the mask-classification loss, side adapter, decoders,
head, segmentor (Fig. 2 walk, Eq. 4, vocabulary switch), freezing and config errors (split from
test_san.py; tests unchanged)."""
import copy

import pytest
import torch
import torch.nn.functional as F
from mmengine.registry import init_default_scope
from mmengine.structures import InstanceData
from mmseg.registry import MODELS

import mmseg_ovseg  # noqa: F401  (registers the plugin's modules)
from mmseg_ovseg.models.decode_heads.san_decoders import AttentionBiasDecoder, MaskDecoder
from mmseg_ovseg.models.decode_heads.side_adapter import SideAdapterViT
from mmseg_ovseg.models.layers.fast_path import fast_path
from mmseg_ovseg.models.losses.mask_classification_loss import MaskClassificationLoss
from mmseg_ovseg.models.losses.point_sampling import point_sample, sample_uncertain_points
from test_san import CLASSES, _samples

CLIP = dict(
    embed_dim=32,
    vision_cfg=dict(image_size=64, layers=3, width=64, head_width=32, patch_size=8),
    text_cfg=dict(context_length=77, vocab_size=49408, width=32, heads=2, layers=1))


def tiny_san_cfg(**overrides):
    cfg = dict(
        type='SAN',
        data_preprocessor=dict(type='SegDataPreProcessor', mean=[123.7, 116.3, 103.5],
                               std=[58.4, 57.1, 57.4]),
        vocabulary=CLASSES,
        templates='single',
        clip_scale=0.5,
        fusion_layers=(0, 1, 2),
        split_layer=2,
        backbone=dict(type='CLIPVisionTransformer', clip_model=CLIP, frozen=True,
                      frozen_exclude=('positional_embedding', )),
        text_encoder=dict(type='OVCLIPTextEncoder', clip_model=CLIP, templates='single'),
        decode_head=dict(
            type='SANHead',
            side_adapter=dict(embed_dims=32, depth=3, num_heads=2, patch_size=8,
                              num_queries=6, pos_grid=(8, 8), clip_channels=64,
                              fusion_index=(0, 1, 2)),
            mask_decoder=dict(embed_channels=16, mlp_channels=16),
            bias_decoder=dict(num_heads=2, embed_channels=16, mlp_channels=16),
            text_channels=32,
            deep_supervision_idxs=(2, ),
            loss_decode=dict(type='MaskClassificationLoss', num_points=256)),
        train_cfg=dict(),
        test_cfg=dict(mode='whole'))
    cfg.update(overrides)
    return cfg


@pytest.fixture
def san():
    init_default_scope('mmseg')
    torch.manual_seed(0)
    return MODELS.build(tiny_san_cfg())


# ---------------------------------------------------------------------- point sampling
def test_point_sample_values_and_mmcv_equivalence():
    x = torch.arange(4.).view(1, 1, 2, 2)
    # cell centres of a 2x2 map (align_corners=False): exact values, (x, y) order
    coords = torch.tensor([[[0.25, 0.25], [0.75, 0.25], [0.25, 0.75], [0.75, 0.75]]])
    assert torch.allclose(point_sample(x, coords)[0, 0], torch.tensor([0., 1., 2., 3.]))
    from mmcv.ops import point_sample as mmcv_point_sample
    maps, pts = torch.randn(3, 2, 7, 5), torch.rand(3, 11, 2)
    assert torch.allclose(point_sample(maps, pts), mmcv_point_sample(maps, pts), atol=1e-6)
    with pytest.raises(ValueError, match='point_sample'):
        point_sample(maps[0], pts)


def test_uncertain_points_focus_on_boundaries():
    torch.manual_seed(0)
    # logits are a ramp in x crossing 0 at x = 0.5: uncertainty grows towards the centre line
    ramp = torch.linspace(-10, 10, 64)
    logits = ramp.view(1, 1, 1, 64).expand(2, 1, 32, 64).contiguous()
    coords = sample_uncertain_points(logits, 400, oversample_ratio=3.0,
                                     importance_sample_ratio=0.75)
    assert coords.shape == (2, 400, 2)
    assert ((coords >= 0) & (coords <= 1)).all()
    # 300 importance points ~ the 25% of 1200 uniform candidates closest to x = 0.5 (a few
    # near the top/bottom border also qualify: zero padding halves the sampled logit there)
    dist = (coords[:, :300, 0] - 0.5).abs()
    assert (dist < 0.14).float().mean() > 0.95 and dist.mean() < 0.08
    # the remaining 100 are uniform: spread over the whole image
    assert (coords[:, 300:, 0] - 0.5).abs().max() > 0.3
    with pytest.raises(ValueError):
        sample_uncertain_points(logits, 10, oversample_ratio=0.5)


# ---------------------------------------------------------------------- loss
def _gt(labels, h=32, w=32):
    masks = torch.zeros(len(labels), h, w, dtype=torch.long)
    for i in range(len(labels)):
        masks[i, :, i * (w // len(labels)):(i + 1) * (w // len(labels))] = 1
    return InstanceData(labels=torch.tensor(labels), masks=masks)


def test_mask_classification_loss_matching_and_values():
    init_default_scope('mmseg')
    torch.manual_seed(0)
    loss_fn = MaskClassificationLoss(num_points=512)
    gt = _gt([2, 0])
    q, k = 5, 3
    cls = torch.full((1, q, k + 1), -5.0)
    masks = torch.full((1, q, 16, 16), -8.0)
    # query 3 predicts gt 0 (class 2, left half), query 1 predicts gt 1 (class 0, right half)
    cls[0, 3, 2] = cls[0, 1, 0] = 8.0
    cls[0, [0, 2, 4], k] = 8.0
    masks[0, 3, :, :8] = 8.0
    masks[0, 1, :, 8:] = 8.0
    qi, gi = loss_fn.match(cls[0], masks[0], gt)
    assert dict(zip(qi.tolist(), gi.tolist())) == {3: 0, 1: 1}

    cls.requires_grad_(True)
    masks.requires_grad_(True)
    torch.manual_seed(5)
    good = loss_fn(cls, masks, [gt])
    # replay the random draws: matching points, then importance-sampled loss points
    torch.manual_seed(5)
    loss_fn.match(cls[0], masks[0], gt)
    pred = masks[0, [1, 3]].detach()[:, None]  # matched queries in ascending order
    coords = sample_uncertain_points(pred, 512, 3.0, 0.75)
    p_pts = point_sample(pred, coords)[:, 0]
    t_pts = point_sample(gt.masks[[1, 0], None].float(), coords)[:, 0]
    bce = F.binary_cross_entropy_with_logits(p_pts, t_pts, reduction='none').mean(1).sum() / 2
    sig = p_pts.sigmoid()
    dice = (1 - (2 * (sig * t_pts).sum(1) + 1) / (sig.sum(1) + t_pts.sum(1) + 1)).sum() / 2
    assert torch.allclose(good['loss_mask_ce'], 5 * bce, atol=1e-5)
    assert torch.allclose(good['loss_mask_dice'], 5 * dice, atol=1e-5)
    assert set(good) == {'loss_cls_ce', 'loss_mask_ce', 'loss_mask_dice'}
    # class loss = 2 x weighted CE with no-object weight 0.1 (weighted mean)
    labels = torch.tensor([k, 0, k, 2, k])
    w = torch.tensor([1., 1., 1., 0.1])
    expected = 2.0 * F.cross_entropy(cls[0], labels, weight=w)
    assert torch.allclose(good['loss_cls_ce'], expected)
    sum(good.values()).backward()
    assert cls.grad.abs().sum() > 0 and masks.grad.abs().sum() > 0

    bad = loss_fn(cls.detach().roll(1, dims=1), masks.detach().roll(2, dims=1), [gt])
    assert all(bad[key] > good[key] for key in good)


def test_mask_classification_loss_empty_and_bad_input():
    init_default_scope('mmseg')
    loss_fn = MaskClassificationLoss(num_points=64)
    cls = torch.randn(2, 4, 3, requires_grad=True)
    masks = torch.randn(2, 4, 8, 8, requires_grad=True)
    empty = InstanceData(labels=torch.zeros(0, dtype=torch.long),
                         masks=torch.zeros(0, 32, 32, dtype=torch.long))
    out = loss_fn(cls, masks, [empty, empty])
    assert out['loss_mask_ce'] == 0 and out['loss_mask_dice'] == 0
    sum(out.values()).backward()  # graph stays connected
    assert masks.grad is not None
    with pytest.raises(ValueError, match='out of range'):
        loss_fn(cls, masks, [_gt([5]), empty])
    with pytest.raises(ValueError, match='ground truths'):
        loss_fn(cls, masks, [empty])
    # A diverged model: NaN predictions are named before scipy's matcher sees them.
    for bad_cls, bad_masks in ((cls.detach() * float('nan'), masks), (cls, masks.detach() / 0)):
        with pytest.raises(FloatingPointError, match='non-finite .* Hungarian matcher'):
            loss_fn(bad_cls, bad_masks, [_gt([1]), empty])


# ---------------------------------------------------------------------- side adapter
@pytest.mark.slow
def test_side_adapter_shapes_fusion_and_errors():
    torch.manual_seed(0)
    net = SideAdapterViT(embed_dims=32, depth=4, num_heads=2, patch_size=8, num_queries=5,
                         pos_grid=(8, 8), clip_channels=16, fusion_index=(0, 2))
    img = torch.randn(2, 3, 64, 48)  # non-square: the position embedding is resized
    feats = [torch.randn(2, 16, 4, 3), torch.randn(2, 16, 4, 3)]
    outs = net(img, feats, (2, 4))
    assert len(outs) == 2
    for query, x in outs:
        assert query.shape == (2, 5, 32) and x.shape == (2, 32, 8, 6)
    # fusion at block 2 changes block >= 2 outputs only
    feats2 = [feats[0], feats[1] + 1.0]
    outs2 = net(img, feats2, (1, 4))
    outs1 = net(img, feats, (1, 4))
    assert torch.equal(outs1[0][1], outs2[0][1])
    assert not torch.allclose(outs1[1][1], outs2[1][1])
    # gradients reach the fusion projections and the queries
    outs[-1][0].sum().backward()
    assert net.fusion_layers[1][1].weight.grad.abs().sum() > 0
    assert net.query_embed.grad.abs().sum() > 0
    with pytest.raises(ValueError, match='at least one'):
        net(torch.randn(1, 3, 7, 64), feats, (4, ))
    with pytest.raises(ValueError, match='CLIP features'):
        net(img, feats[:1], (4, ))
    with pytest.raises(ValueError, match='fusion_index'):
        SideAdapterViT(depth=2, fusion_index=(0, 3))


def test_decoders_match_their_equations():
    torch.manual_seed(0)
    md = MaskDecoder(in_channels=8, embed_channels=6, mlp_channels=10)
    bd = AttentionBiasDecoder(in_channels=8, num_heads=3, embed_channels=6, mlp_channels=10)
    with torch.no_grad():
        bd.bias_scaling.weight.fill_(2.0)
        bd.bias_scaling.bias.fill_(-1.0)
    q, x = torch.randn(2, 4, 8), torch.randn(2, 8, 5, 7)
    masks, qe = md(q, x)
    assert masks.shape == (2, 4, 5, 7) and qe.shape == (2, 4, 6)
    assert torch.allclose(masks, torch.einsum('bqc,bchw->bqhw', qe, md.pix_mlp(x)), atol=1e-5)
    bias = bd(qe, x)
    attn = bd.attn_mlp(x).view(2, 3, 6, 5, 7)
    ref = torch.einsum('bqc,bnchw->bnqhw', qe, attn) * 2.0 - 1.0
    assert bias.shape == (2, 3, 4, 5, 7) and torch.allclose(bias, ref, atol=1e-5)


# ---------------------------------------------------------------------- segmentor
@pytest.mark.slow
def test_san_loss_backward_and_freezing(san):
    san.train()
    inputs = torch.randn(2, 3, 64, 64)
    losses = san.loss(inputs, _samples(2, 64, 64))
    assert set(losses) == {f'decode.{p}{k}' for p in ('', 'd2.')
                           for k in ('loss_cls_ce', 'loss_mask_ce', 'loss_mask_dice')}
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    trainable = {n for n, p in san.named_parameters() if p.requires_grad}
    assert 'backbone.visual.positional_embedding' in trainable
    assert not any(n.startswith('text_encoder.') for n in trainable)
    assert not any(n.startswith('backbone.') and 'positional_embedding' not in n
                   for n in trainable)
    assert 'decode_head.logit_scale' not in trainable
    # gradient flows through the frozen CLIP layers into the attention bias decoder and the
    # CLIP position embedding; the background embedding trains
    for name in ('backbone.visual.positional_embedding',
                 'decode_head.bias_decoder.attn_mlp.layers.0.weight',
                 'decode_head.side_adapter.blocks.0.attn.qkv.weight',
                 'decode_head.bg_embed'):
        grad = dict(san.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name


@pytest.mark.slow
def test_san_predict_is_eq4_and_vocabulary_switch(san):
    san.eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        feats = san.extract_feat(x)
        cls, masks = san.decode(feats)
        assert len(masks) == 1 and masks[0].shape == (1, 6, 8, 8)
        assert cls[0].shape == (1, 6, len(CLASSES) + 1)
        seg = san.predict(x)[0].seg_logits.data
        up = F.interpolate(masks[0], size=(64, 64), mode='bilinear', align_corners=False)
        ref = torch.einsum('bqc,bqhw->bchw', cls[0].softmax(-1)[..., :-1], up.sigmoid())[0]
        assert seg.shape == (len(CLASSES), 64, 64)
        assert torch.allclose(seg, ref, atol=1e-5)
        # class logits are 100 x cosine similarities (|logit| <= 100)
        assert cls[0].abs().max() <= 100.0 + 1e-3
        san.set_vocabulary(['tree', 'car'])
        seg2 = san.predict(x)[0]
        assert seg2.seg_logits.data.shape == (2, 64, 64)
        assert san.decode_head.num_classes == 2
        assert int(seg2.pred_sem_seg.data.max()) <= 1


def test_san_walks_fig2_with_tensors_only(san):
    """The segmentor walks Fig. 2: ``feats`` holds tensors only (no callables); side adapter
    (proposals, biases) -> pooled bias -> CLIP SLS recognition -> classification, as
    ``SAN.decode``; the head alone cannot predict (CLIP sits between its steps)."""
    san.eval()
    head = san.decode_head
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        feats = san.extract_feat(x)
        clip = feats['feats']
        assert set(clip) == {'clip_feats', 'clip_hw', 'split_tokens'}
        assert not any(callable(v) for v in clip.values())
        assert tuple(clip['clip_hw']) == (4, 4)  # 64 * 0.5 / 8
        assert clip['split_tokens'].shape == (1, 1 + 16, san.backbone.width)
        masks, biases = head(feats)
        assert masks[-1].shape == (1, 6, 8, 8) and biases[-1].shape == (1, 2, 6, 8, 8)
        bias = head.pool_bias(biases[-1], clip['clip_hw'])
        assert bias.shape == (1, 2, 6, 16)
        mask_embeds = san.recognize(clip['split_tokens'], bias)
        assert mask_embeds.shape == (1, 6, 32)
        cls = head.classify(mask_embeds, feats['class_embeds'])
        all_cls, all_masks = san.decode(feats)
        torch.testing.assert_close(all_masks[-1], masks[-1])
        torch.testing.assert_close(all_cls[-1], cls)
        # the recognition depends on the bias (CLIP is really steered by the side adapter)
        other = san.recognize(clip['split_tokens'], torch.zeros_like(bias))
        assert not torch.allclose(other, mask_embeds)
    for call in (lambda: head.predict(feats, [dict(img_shape=(64, 64))], san.test_cfg),
                 lambda: head.loss(feats, _samples(1, 64, 64), san.train_cfg)):
        with pytest.raises(RuntimeError, match='SAN segmentor'):
            call()


def test_san_odd_and_small_inputs(san):
    san.eval()
    with torch.no_grad():
        out = san.predict(torch.randn(1, 3, 72, 40))[0]  # non-square, CLIP grid 5x3 (padded)
        assert out.seg_logits.data.shape == (len(CLASSES), 72, 40)
        with pytest.raises(ValueError, match='at least one'):
            san.predict(torch.randn(1, 3, 6, 64))


def test_san_config_errors():
    init_default_scope('mmseg')
    with pytest.raises(ValueError, match='split_layer'):
        MODELS.build(tiny_san_cfg(split_layer=3))
    with pytest.raises(ValueError, match='fusion_layers'):
        MODELS.build(tiny_san_cfg(fusion_layers=(0, 3)))
    bad = tiny_san_cfg()
    bad['decode_head'] = copy.deepcopy(bad['decode_head'])
    bad['decode_head']['bias_decoder']['num_heads'] = 4
    with pytest.raises(ValueError, match='num_heads'):
        MODELS.build(bad)


def test_predict_by_feat_band_path_equals_full_upsampling(san):
    """Eq. 4 computed in row bands (power-of-two scale) equals full-size upsampling."""
    head = san.decode_head
    torch.manual_seed(0)
    masks, cls = torch.randn(2, 5, 7, 9) * 4, torch.randn(2, 5, 4) * 3
    for size in ((112, 144), (56, 72), (100, 130)):  # scale 16, scale 8, fallback
        seg = head.predict_by_feat((cls, masks), [dict(img_shape=size, pad_shape=size)] * 2)
        up = F.interpolate(masks, size=size, mode='bilinear', align_corners=False).sigmoid()
        ref = torch.einsum('bqc,bqhw->bchw', cls.softmax(-1)[..., :-1], up)
        assert seg.shape == ref.shape == (2, 3) + size
        assert torch.allclose(seg, ref, atol=1e-5), size
        assert torch.equal(seg.argmax(1), ref.argmax(1))


@fast_path(True)  # the banded Eq. 4 and integer argmax, whatever OVSEG_FAST_PATH says
def test_eq4_under_autocast_and_integer_argmax(san):
    """Under bf16 autocast the scores are bf16 (class product in bf16) and close to float32;
    the argmax SAN takes on the scores' integer bit patterns equals the float argmax."""
    head = san.decode_head
    torch.manual_seed(0)
    masks, cls = torch.randn(1, 5, 7, 9) * 4, torch.randn(1, 5, 20) * 3
    meta = [dict(img_shape=(112, 144), pad_shape=(112, 144))]
    seg32 = head.predict_by_feat((cls, masks), meta)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        seg16 = head.predict_by_feat((cls, masks), meta)
    assert seg32.dtype == torch.float32 and seg16.dtype == torch.bfloat16
    assert seg16.shape == seg32.shape == (1, 19, 112, 144)
    assert (seg16.float() - seg32).abs().max() < 2e-2
    assert san.nonnegative_scores and seg32.min() >= 0
    for seg in (seg32[0], seg16[0]):
        assert torch.equal(san._argmax_classes(seg), seg.argmax(dim=0, keepdim=True))
    # the integer path is the one taken: outside its precondition (scores >= 0) it orders
    # negative floats backwards (as int32, bits(-2.0) > bits(-1.0))
    neg = torch.tensor([-2.0, -1.0]).view(2, 1, 1)
    assert int(san._argmax_classes(neg)) == 0 and int(neg.argmax(dim=0)) == 1
    # ties and exact zeros keep the float argmax's first-index rule
    tied = torch.zeros(4, 3, 3)
    tied[1:3] = 0.5
    assert torch.equal(san._argmax_classes(tied), tied.argmax(dim=0, keepdim=True))


def test_forward_sls_without_visual_output(san):
    """The SLS result does not depend on skipping the unused last visual block."""
    backbone = san.backbone
    torch.manual_seed(0)
    tokens, _ = backbone.embed(torch.randn(2, 3, 32, 32))
    bias = torch.randn(2, backbone.num_heads, 6, tokens.shape[1] - 1)
    with torch.no_grad():
        sls_a, x = backbone.forward_sls(tokens, bias, 1)
        sls_b, none = backbone.forward_sls(tokens, bias, 1, return_visual=False)
    assert x.shape == tokens.shape and none is None
    assert torch.allclose(sls_a, sls_b, atol=1e-5)
