"""DenseCLIP ViT-B/16 variant: FPNAdapter (official fpn1-fpn4), the segmentor with a ViT
backbone + adapters (score map on the adapted 1/16 level), the 640 ADE20K config and its
parameter count, the converter for official ViT checkpoints."""
import functools
import os.path as osp

import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config, ConfigDict
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope
from mmseg.registry import MODELS

import mmseg_ovseg  # noqa: F401  (registers everything)
from mmseg_ovseg.models.necks import FPNAdapter
from official_fixtures import official_keys
from test_denseclip import (  # noqa: F401
    _official_name,
    _quiet,
    _small_official,
    check_values_landed,
    convert_official_into,
    shipped_model,
)
from test_denseclip import _samples as _denseclip_samples
from tool_loader import load_tool


def initialized(module):
    """``module`` after ``init_weights()``: CLIP towers read ``pretrained`` there
    (mmengine's convention), not at construction."""
    module.init_weights()
    return module


REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
TINY_CFG = osp.join(REPO, 'configs', 'denseclip-vit_tiny_synthetic.py')
ADE_CFG = osp.join(REPO, 'configs', 'denseclip_fpn_vit-b16_ade20k-640x640.py')
K = 8  # 'synthetic' vocabulary of the tiny config
W = 64  # tiny ViT width


_samples = functools.partial(_denseclip_samples, num_classes=K)


def _tiny_model(image_size=None):
    cfg = Config.fromfile(TINY_CFG)
    if image_size is not None:  # position grid of an official checkpoint at this input
        for part in (cfg.model.backbone, cfg.model.text_encoder):
            part.clip_model.vision_cfg.image_size = image_size
    init_default_scope('mmseg')
    model = MODELS.build(cfg.model)
    model.init_weights()
    with torch.no_grad():  # a visible context decoder (official gamma 1e-4 barely moves t)
        model.context_decoder.gamma.fill_(0.5)
    return model


# ---------------------------------------------------------------- adapters
def _randomise(module, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5 + (1.0 if p.dim() == 1 else 0.0))
        for name, buf in module.named_buffers():
            if name.endswith('running_mean'):
                buf.copy_(torch.randn(buf.shape, generator=g) * 0.1)
            elif name.endswith('running_var'):
                buf.copy_(torch.rand(buf.shape, generator=g) + 0.5)


def test_fpn_adapter_levels_match_the_official_ops():
    adapter = FPNAdapter(in_channels=8, norm_cfg=dict(type='BN', requires_grad=True))
    _randomise(adapter)
    adapter.eval()
    # official submodule names/indices (weights convert by prefix)
    assert list(adapter.state_dict()) == [
        'fpn1.0.weight', 'fpn1.0.bias', 'fpn1.1.weight', 'fpn1.1.bias', 'fpn1.2.weight',
        'fpn1.2.bias', 'fpn1.2.running_mean', 'fpn1.2.running_var',
        'fpn1.2.num_batches_tracked', 'fpn1.4.weight', 'fpn1.4.bias', 'fpn2.0.weight',
        'fpn2.0.bias', 'fpn2.1.weight', 'fpn2.1.bias', 'fpn3.weight', 'fpn3.bias',
        'fpn4.0.weight', 'fpn4.0.bias']
    xs = [torch.randn(2, 8, 6, 10) for _ in range(4)]  # four ViT layers, all at 1/16
    outs = adapter(xs)
    # strides 16 -> 4, 8, 16, 32
    assert [tuple(o.shape) for o in outs] == [(2, 8, 24, 40), (2, 8, 12, 20), (2, 8, 6, 10),
                                             (2, 8, 3, 5)]
    f1, f2, f3, f4 = adapter.fpn1, adapter.fpn2, adapter.fpn3, adapter.fpn4

    def gn(m, x):  # GroupNorm(1, C): one group over all channels and positions
        mu = x.mean(dim=(1, 2, 3), keepdim=True)
        var = x.var(dim=(1, 2, 3), unbiased=False, keepdim=True)
        return (x - mu) / (var + 1e-5).sqrt() * m.weight[:, None, None] + m.bias[:, None, None]

    def deconv(m, x):
        return F.conv_transpose2d(x, m.weight, m.bias, stride=2)

    bn = f1[2]
    y = deconv(f1[1], gn(f1[0], xs[0]))
    y = (y - bn.running_mean[:, None, None]) / (bn.running_var[:, None, None] + 1e-5).sqrt()
    y = y * bn.weight[:, None, None] + bn.bias[:, None, None]
    expected = [deconv(f1[4], F.gelu(y)), deconv(f2[1], gn(f2[0], xs[1])), gn(f3, xs[2]),
                F.max_pool2d(gn(f4[0], xs[3]), 2)]
    for out, exp in zip(outs, expected):
        torch.testing.assert_close(out, exp, rtol=1e-4, atol=1e-4)
    # the GroupNorm sees the whole map: a per-image affine change of the input is removed
    torch.testing.assert_close(adapter([3 * x + 1 for x in xs])[2], outs[2], rtol=1e-4,
                               atol=1e-4)


def test_fpn_adapter_patch8_layout_defaults_and_errors():
    adapter = FPNAdapter(in_channels=4, rescales=(2, 1, 0.5, 0.25))
    # official patch-8 layout: GN+deconv, GN, GN+maxpool 2, GN+maxpool 4 (no BN at 2x)
    assert len(adapter.fpn1) == 2 and isinstance(adapter.fpn1[1], torch.nn.ConvTranspose2d)
    assert adapter.fpn4[1].kernel_size == 4 and adapter.fpn4[1].stride == 4
    assert isinstance(adapter.fpn2, torch.nn.GroupNorm) and adapter.fpn2.num_groups == 1
    outs = adapter([torch.randn(1, 4, 8, 8)] * 4)
    assert [tuple(o.shape[-2:]) for o in outs] == [(16, 16), (8, 8), (4, 4), (2, 2)]
    # official default: SyncBN inside the 4x level
    assert isinstance(FPNAdapter(in_channels=4).fpn1[2], torch.nn.SyncBatchNorm)
    assert FPNAdapter(in_channels=4).out_channels == [4, 4, 4, 4]
    with pytest.raises(ValueError, match='rescales'):
        FPNAdapter(in_channels=4, rescales=(3, 1))
    with pytest.raises(ValueError, match='expected 4 maps'):
        adapter([torch.randn(1, 4, 8, 8)] * 3)


# ---------------------------------------------------------------- segmentor
@pytest.mark.slow
def test_tiny_vit_denseclip_features_follow_the_official_order():
    model = _tiny_model().eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        stages, score, text = model.forward_features(x)
        *maps, dense, glob = model.backbone(x)
        adapted = model.adapter(maps)
        neck_out = model.extract_feat(x)
        logits = model._forward(x)
    # ViT maps of layers 0-3 at 1/16 (4x4) -> strides 4, 8, 16, 32; score map at 1/16
    assert [tuple(m.shape) for m in maps] == [(2, W, 4, 4)] * 4
    assert dense.shape == (2, 32, 4, 4) and glob.shape == (2, 32)
    assert [tuple(s.shape) for s in stages] == [(2, W, 16, 16), (2, W, 8, 8),
                                                (2, W + K, 4, 4), (2, W, 2, 2)]
    assert score.shape == (2, K, 4, 4) and text.shape == (2, K, 32)
    # adapters first (the score map is not normalised by fpn3's GroupNorm), then concat
    for i in (0, 1, 3):
        torch.testing.assert_close(stages[i], adapted[i])
    torch.testing.assert_close(stages[2][:, :W], adapted[2])
    torch.testing.assert_close(stages[2][:, W:], score)
    expected = torch.einsum('bchw,bkc->bkhw', F.normalize(dense, dim=1),
                            F.normalize(text, dim=-1))
    torch.testing.assert_close(score, expected, rtol=1e-5, atol=1e-5)
    assert [tuple(t.shape) for t in neck_out] == [(2, 32, 16, 16), (2, 32, 8, 8),
                                                  (2, 32, 4, 4), (2, 32, 2, 2)]
    assert logits.shape == (2, K, 16, 16)


@pytest.mark.slow
def test_tiny_vit_denseclip_loss_gradients_and_predict():
    model = _tiny_model().train()
    x = torch.randn(2, 3, 64, 64)
    losses = model.loss(x, _samples(2, 64, 64))
    assert set(losses) == {'decode.loss_ce', 'decode.acc_seg', 'aux_identity.loss_ce',
                           'aux_identity.acc_seg'}
    total = losses['decode.loss_ce'] + losses['aux_identity.loss_ce']
    assert torch.isfinite(total)
    total.backward()
    params = dict(model.named_parameters())
    for name in ('adapter.fpn1.1.weight', 'adapter.fpn1.2.weight', 'adapter.fpn2.1.weight',
                 'adapter.fpn3.weight', 'adapter.fpn4.0.weight',
                 'backbone.visual.transformer.resblocks.0.attn.in_proj_weight',
                 'backbone.visual.transformer.resblocks.3.mlp.c_fc.weight',
                 'backbone.visual.proj', 'backbone.visual.positional_embedding',
                 'text_encoder.contexts', 'context_decoder.gamma',
                 'neck.lateral_convs.2.conv.weight', 'decode_head.conv_seg.weight'):
        grad = params[name].grad
        assert grad is not None and grad.abs().sum() > 0, name
    # the score-map channels of FPN's level-2 lateral conv get gradients too
    assert params['neck.lateral_convs.2.conv.weight'].grad[:, W:].abs().sum() > 0
    assert params['text_encoder.token_embedding.weight'].grad is None  # frozen tower
    model.eval()
    samples = _samples(1, 64, 96)
    with torch.no_grad():
        out = model.predict(torch.randn(1, 3, 64, 96), samples)
    assert out[0].seg_logits.data.shape == (K, 64, 96)
    assert out[0].pred_sem_seg.data.shape == (1, 64, 96)


def test_vit_channel_checks():
    cfg = Config.fromfile(TINY_CFG)
    init_default_scope('mmseg')
    bad = ConfigDict(cfg.model)
    bad.neck = dict(bad.neck, in_channels=[W, W, W, W + K])  # score map on the wrong level
    with pytest.raises(ValueError, match=r'neck.in_channels must be \[64, 64, 72, 64\]'):
        MODELS.build(bad)
    bad = ConfigDict(cfg.model)
    bad.adapter = dict(bad.adapter, in_channels=32)
    with pytest.raises(ValueError, match='adapter.in_channels'):
        MODELS.build(bad)


@pytest.mark.slow
def test_tiny_vit_config_trains_one_step():
    cfg = Config.fromfile(TINY_CFG)
    cfg.model.data_preprocessor.size = (64, 64)
    init_default_scope('mmseg')
    model = MODELS.build(cfg.model)
    model.init_weights()
    wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    g = torch.Generator().manual_seed(0)
    data = dict(inputs=[torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8, generator=g)
                        for _ in range(2)],
                data_samples=_samples(2, 64, 64))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    model.train()
    log = model.train_step(data, wrapper)
    assert torch.isfinite(log['loss'])
    after = dict(model.named_parameters())
    for name in ('adapter.fpn1.4.weight', 'adapter.fpn3.bias', 'text_encoder.contexts',
                 'backbone.visual.transformer.resblocks.2.attn.out_proj.weight'):
        assert not torch.equal(before[name], after[name]), name
    assert torch.equal(before['text_encoder.token_embedding.weight'],
                       after['text_encoder.token_embedding.weight'])


# ---------------------------------------------------------------- 640 ADE20K config
# Trainable parameters of the ViT-B/16 config (text tower frozen; contexts train):
VIT_B16_VISUAL = (3 * 768 * 16 * 16  # conv1 (no bias)
                  + 768 + 1601 * 768 + 2 * 768  # class embedding, 40x40+1 positions, ln_pre
                  + 12 * (2 * 768 + 768 * 2304 + 2304 + 768 * 768 + 768  # ln_1, attn
                          + 2 * 768 + 768 * 3072 + 3072 + 3072 * 768 + 768)  # ln_2, mlp
                  + 2 * 768 + 768 * 512)  # ln_post, proj
DECONV = 768 * 768 * 2 * 2 + 768
ADAPTER = (2 * 768 + DECONV + 2 * 768 + DECONV  # fpn1: GN, deconv, BN, deconv
           + 2 * 768 + DECONV + 2 * 768 + 2 * 768)  # fpn2: GN, deconv; fpn3, fpn4: GN
_DEC_LAYER = (3 * 2 * 256 + 2 * (3 * 256 * 256 + 256 * 256 + 256)  # norms, self/cross attn
              + 256 * 1024 + 1024 + 1024 * 256 + 256)  # GELU MLP x4
CONTEXT_DECODER = (2 * 512 + 512 * 256 + 256 + 2 * 256  # memory_proj
                   + 2 * 512 + 512 * 256 + 256  # text_proj
                   + 3 * _DEC_LAYER + 2 * 256 + 256 * 512 + 512 + 512)  # out_proj, gamma
FPN = (sum(c * 256 + 256 for c in (768, 768, 768 + 150, 768))  # 1x1 laterals
       + 4 * (256 * 256 * 9 + 256))  # 3x3 outputs
FPN_HEAD = 7 * (256 * 256 * 9 + 2 * 256) + 256 * 150 + 150  # 1+1+2+3 conv-BN, classifier
CONTEXTS = 8 * 512
VIT_B16_TRAINABLE = VIT_B16_VISUAL + ADAPTER + CONTEXT_DECODER + FPN + FPN_HEAD + CONTEXTS


@pytest.mark.slow
def test_ade20k_vit_config_follows_the_official_recipe_and_counts_params():
    assert (VIT_B16_VISUAL, ADAPTER, CONTEXT_DECODER, FPN, FPN_HEAD) == (
        87270912, 7087872, 3553536, 3186176, 4170902)
    # the README's 105.3M (parameters without the text encoder)
    assert VIT_B16_TRAINABLE == 105273494 and abs(VIT_B16_TRAINABLE - 105.3e6) < 0.05e6
    cfg = Config.fromfile(ADE_CFG)
    m = cfg.model
    assert m.backbone.type == 'CLIPVisionTransformer' and m.backbone.out_indices == (3, 5, 7, 11)
    assert m.backbone.drop_path_rate == 0.1 and m.backbone.output_dense
    assert not m.backbone.frozen and m.backbone.interpolate_mode == 'bilinear'
    assert m.backbone.pos_grid == (40, 40)  # official: resized once, trained at 40x40
    assert m.backbone.fold_class_embedding  # official CLS token: class_embedding added twice
    assert m.backbone.clip_model.quick_gelu  # OpenAI ViT-B/16 weights
    assert m.adapter.type == 'FPNAdapter' and m.adapter.rescales == (4, 2, 1, 0.5)
    assert m.adapter.norm_cfg.type == 'SyncBN'
    assert m.score_concat_index == 2 and m.neck.in_channels == [768, 768, 768 + 150, 768]
    assert m.context_decoder.visual_dim == 512 and m.context_decoder.num_layers == 3
    assert (m.text_encoder.num_contexts, m.text_encoder.context_length) == (8, 13)
    assert m.identity_head.loss_decode.loss_weight == 0.4 and m.tau == 0.07
    assert m.test_cfg.crop_size == (640, 640) and m.test_cfg.stride == (426, 426)
    assert m.data_preprocessor.size == (640, 640)
    train = cfg.train_dataloader.dataset.pipeline
    assert train[2].scale == (2048, 640) and train[3].crop_size == (640, 640)
    assert cfg.test_dataloader.dataset.pipeline[1].scale == (2048, 640)
    opt = cfg.optim_wrapper
    assert opt.optimizer.lr == 1e-4 and opt.optimizer.weight_decay == 1e-4
    assert cfg.train_cfg.max_iters == 80000 and cfg.train_dataloader.batch_size == 4

    init_default_scope('mmseg')
    m.backbone.pretrained = m.text_encoder.pretrained = None  # random weights, no files
    model = MODELS.build(m)
    trainable = {n: p.numel() for n, p in model.named_parameters() if p.requires_grad}
    assert sum(trainable.values()) == VIT_B16_TRAINABLE
    parts = {k: sum(v for n, v in trainable.items() if n.startswith(k + '.'))
             for k in ('backbone', 'adapter', 'context_decoder', 'neck', 'decode_head')}
    assert parts == dict(backbone=VIT_B16_VISUAL, adapter=ADAPTER,
                         context_decoder=CONTEXT_DECODER, neck=FPN, decode_head=FPN_HEAD)
    assert [n for n in trainable if n.startswith('text_encoder.')] == ['text_encoder.contexts']
    assert model.backbone.visual.positional_embedding.shape == (1601, 768)
    # optimizer groups: adapters at the backbone's lr x0.1 (they are the official backbone's)
    wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    ids = {id(p): n for n, p in model.named_parameters()}
    lr = {ids[id(p)]: g['lr'] for g in wrapper.optimizer.param_groups for p in g['params']}
    assert lr['adapter.fpn1.1.weight'] == pytest.approx(1e-5)
    assert lr['backbone.visual.conv1.weight'] == pytest.approx(1e-5)
    assert lr['neck.lateral_convs.0.conv.weight'] == pytest.approx(1e-4)
    assert lr['text_encoder.contexts'] == pytest.approx(1e-4)


# ---------------------------------------------------------------- converter
@pytest.mark.slow
def test_converter_official_vit_b_into_the_shipped_config():
    """Official denseclip_fpn_vit-b_640x640_80k.py checkpoint layout (recorded fixture) ->
    converter -> strict load into configs/denseclip_fpn_vit-b16_ade20k-640x640.py."""
    keys = official_keys('denseclip_vit-b')
    assert keys['backbone.positional_embedding'] == [1 + 40 * 40, 768]
    assert keys['backbone.fpn1.2.running_var'] == [768] and keys['backbone.fpn3.weight'] == [768]
    assert keys['text_encoder.positional_embedding'] == [13, 512] and keys['gamma'] == [512]
    model = shipped_model(ADE_CFG)
    official = convert_official_into('denseclip_vit-b', model, seed=2)
    check_values_landed(model, official)


def test_converter_folds_the_official_second_class_embedding_hand_values():
    """Official forward: CLS token = class_embedding + (pos[0] + class_embedding); open_clip's
    = class_embedding + pos[0]. The converter adds class_embedding to pos[0] once."""
    state = _small_official(**{
        'backbone.class_embedding': torch.tensor([1., 2.]),
        'backbone.positional_embedding': torch.tensor([[10., 20.], [3., 4.], [5., 6.]]),
        'backbone.ln_pre.weight': torch.ones(2),
    })
    out = load_tool('model_converters/denseclip2ovseg').convert_denseclip(state)
    assert torch.equal(out['backbone.visual.positional_embedding'],
                       torch.tensor([[11., 22.], [3., 4.], [5., 6.]]))
    assert torch.equal(out['backbone.visual.class_embedding'], torch.tensor([1., 2.]))
    assert torch.equal(state['backbone.positional_embedding'][0], torch.tensor([10., 20.]))
    # the CLS token open_clip then builds equals the official one: 2 * c + p0
    cls_token = (out['backbone.visual.class_embedding']
                 + out['backbone.visual.positional_embedding'][0])
    assert torch.equal(cls_token, torch.tensor([12., 24.]))


def _official_embed(state, x, patch=16):
    """The official ViT input tokens, written out from its forward: the CLS token gets
    ``class_embedding`` a second time through its position row; the grid is resized
    bilinearly (identity here)."""
    w = state['backbone.conv1.weight']
    x = F.conv2d(x, w, stride=patch)
    B, C, H, W_ = x.shape
    x = x.flatten(2).transpose(1, 2)
    cls_emb = state['backbone.class_embedding']
    x = torch.cat([cls_emb.expand(B, 1, C), x], dim=1)
    pos = state['backbone.positional_embedding']
    x = x + torch.cat([(pos[0] + cls_emb)[None], pos[1:]])[None]
    return F.layer_norm(x, (C, ), state['backbone.ln_pre.weight'], state['backbone.ln_pre.bias'])


def test_converted_vit_tokens_equal_the_official_embedding():
    """Numbers, at tiny width: random values under the official backbone names (layout as in
    the fixture test above), converted, give our backbone the official input tokens."""
    model = _tiny_model(image_size=64)  # a 4x4 grid + CLS
    g = torch.Generator().manual_seed(5)
    official = {_official_name(k): torch.randn(v.shape, generator=g)
                for k, v in model.state_dict().items() if k.startswith('backbone.visual.')}
    official.update(_small_official())
    out = load_tool('model_converters/denseclip2ovseg').convert_denseclip(official)
    backbone = {k[len('backbone.'):]: v for k, v in out.items() if k.startswith('backbone.')}
    model.backbone.load_state_dict(backbone, strict=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        tokens, hw = model.backbone.embed(x)
    assert hw == (4, 4)
    torch.testing.assert_close(tokens, _official_embed(official, x), rtol=1e-5, atol=1e-5)


def test_load_time_position_grid_resize_and_cls_fold_hand_values(tmp_path):
    """Official CLIPVisionTransformer.init_weights: CLIP's 14x14 grid resized bilinearly
    (align_corners=False) to 40x40 at load, the CLS row kept; ours: pos_grid. Tiny: a 2x2 grid
    [[0, 4], [8, 12]] at 4x4 is 8 * row + 4 * column at rows/columns 0, 1/4, 3/4, 1. The
    official forward then adds class_embedding c to the CLS row: with fold_class_embedding
    (as the 640 config) the row holds 7 + c, so open_clip's CLS token is the official 2c + 7."""
    from mmseg_ovseg.clip.builder import create_clip
    tiny = dict(embed_dim=8, quick_gelu=True,
                vision_cfg=dict(image_size=32, layers=1, width=16, head_width=8, patch_size=16),
                text_cfg=dict(context_length=77, vocab_size=49408, width=8, heads=1, layers=1))
    clip = create_clip(tiny)
    with torch.no_grad():
        pos = clip.visual.positional_embedding  # (1 + 4, 16)
        pos.zero_()
        pos[0] = 7.
        pos[1:, 0] = torch.tensor([0., 4., 8., 12.])
        clip.visual.class_embedding.copy_(torch.arange(16.))
    torch.save(clip.state_dict(), tmp_path / 'clip.pt')
    backbone = initialized(MODELS.build(dict(type='CLIPVisionTransformer', clip_model=tiny,
                                             pretrained=str(tmp_path / 'clip.pt'),
                                             out_indices=(0, ),
                                             interpolate_mode='bilinear', pos_grid=(4, 4),
                                             fold_class_embedding=True)))
    got = backbone.visual.positional_embedding
    expected = torch.tensor([[0., 1., 3., 4.], [2., 3., 5., 6.], [6., 7., 9., 10.],
                             [8., 9., 11., 12.]]).flatten()
    assert got.shape == (1 + 16, 16)
    assert torch.equal(got[0], 7. + torch.arange(16.))
    assert torch.equal(backbone.visual.class_embedding + got[0], 7. + 2 * torch.arange(16.))
    torch.testing.assert_close(got[1:, 0], expected)
    assert not got[1:, 1:].any()


def test_converter_rejects_unknown_vit_keys():
    conv = load_tool('model_converters/denseclip2ovseg')
    official = {k: torch.empty(v, device='meta')
                for k, v in official_keys('denseclip_vit-b').items()}
    for extra in ('backbone.fpn5.0.weight', 'backbone.fpn1x.weight', 'backbone.proj_extra',
                  'backbone.transformer.foo'):
        with pytest.raises(KeyError, match=extra.replace('.', r'\.')):
            conv.convert_denseclip({**official, extra: torch.zeros(1)})
    no_pos = {k: v for k, v in official.items() if k != 'backbone.positional_embedding'}
    with pytest.raises(KeyError, match='positional_embedding'):
        conv.convert_denseclip(no_pos)
    # adapters belong to a ViT checkpoint; ResNet and ViT tower keys do not mix
    resnetish = {k: v for k, v in official.items()
                 if not k.startswith('backbone.') or k.startswith('backbone.fpn')}
    with pytest.raises(KeyError, match=r'without a ViT backbone.*backbone\.fpn1\.0\.weight'):
        conv.convert_denseclip(resnetish)
    with pytest.raises(KeyError, match=r'mixed backbone layouts.*backbone\.layer1\.0\.conv1'):
        conv.convert_denseclip({**official, 'backbone.layer1.0.conv1.weight': torch.zeros(1)})
