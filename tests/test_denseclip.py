"""DenseCLIP: context decoder math, score map and FPN inputs, losses, gradients, inference,
text caching, converter, configs."""
import os.path as osp

import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config, ConfigDict
from mmengine.logging import MMLogger
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope
from mmengine.structures import PixelData
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample

import mmseg_ovseg  # noqa: F401  (registers everything)
from mmseg_ovseg.models.necks.context_decoder import ContextDecoder
from official_fixtures import official_keys, random_official_state
from tool_loader import load_tool


def initialized(module):
    """``module`` after ``init_weights()``: CLIP towers read ``pretrained`` there
    (mmengine's convention), not at construction."""
    module.init_weights()
    return module


REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
# ResNet stages 32/64/128/256 channels, CLIP embed dim 32 (8 attnpool heads of 32).
TINY = dict(
    embed_dim=32,
    vision_cfg=dict(image_size=64, layers=[1, 1, 1, 1], width=8, head_width=32),
    text_cfg=dict(context_length=77, vocab_size=49408, width=32, heads=2, layers=1))
VOCAB = ['cat', 'dog', 'car']
K = len(VOCAB)


def _cfg(**kwargs):
    cfg = dict(
        type='DenseCLIP',
        vocabulary=VOCAB,
        data_preprocessor=dict(type='SegDataPreProcessor', mean=[0, 0, 0], std=[1, 1, 1]),
        backbone=dict(type='CLIPResNetWithAttention', clip_model=TINY),
        text_encoder=dict(type='ContextCLIPTextEncoder', clip_model=TINY, num_contexts=4,
                          context_length=9, name_suffix='', init_std=1.0),
        context_decoder=dict(type='ContextDecoder', visual_dim=32, embed_dims=16,
                             num_heads=2, num_layers=2, dropout=0.0),
        neck=dict(type='FPN', in_channels=[32, 64, 128, 256 + K], out_channels=16, num_outs=4),
        decode_head=dict(type='FPNHead', in_channels=[16] * 4, in_index=[0, 1, 2, 3],
                         feature_strides=[4, 8, 16, 32], channels=16, dropout_ratio=0.1,
                         norm_cfg=dict(type='BN', requires_grad=True)),
        identity_head=dict(type='IdentityHead',
                           loss_decode=dict(type='CrossEntropyLoss', loss_weight=0.4)),
        test_cfg=dict(mode='whole'))
    cfg.update(kwargs)
    return cfg


def _model(**kwargs):
    init_default_scope('mmseg')
    model = MODELS.build(ConfigDict(_cfg(**kwargs)))
    # A visible gamma: at the official 1e-4 the context decoder barely moves the scores.
    with torch.no_grad():
        model.context_decoder.gamma.fill_(0.5)
    return model


def _samples(b, h, w, seed=0, num_classes=K):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(b):
        s = SegDataSample()
        s.gt_sem_seg = PixelData(data=torch.randint(0, num_classes, (1, h, w), generator=g))
        s.set_metainfo(dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w)))
        out.append(s)
    return out


@pytest.fixture(autouse=True)
def _quiet():
    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel('WARNING')  # init_weights' per-parameter report
    yield
    logger.setLevel(level)


# ---------------------------------------------------------------- context decoder
def _explicit_decoder(dec: ContextDecoder, text, ctx):
    """Sec. 3.3 written out with explicit per-head softmax attention (eval: no dropout)."""

    def ln(m, x):
        return F.layer_norm(x, m.normalized_shape, m.weight, m.bias, m.eps)

    def attn(m, q_in, kv_in, heads):
        B, Q, D = q_in.shape
        q = (q_in @ m.q_proj.weight.t()).view(B, Q, heads, -1).transpose(1, 2)
        k = (kv_in @ m.k_proj.weight.t()).view(B, -1, heads, D // heads).transpose(1, 2)
        v = (kv_in @ m.v_proj.weight.t()).view(B, -1, heads, D // heads).transpose(1, 2)
        a = torch.softmax(q @ k.transpose(-1, -2) / (D // heads)**0.5, dim=-1)
        o = (a @ v).transpose(1, 2).reshape(B, Q, D)
        return o @ m.out_proj.weight.t() + m.out_proj.bias

    mp, tp, op = dec.memory_proj, dec.text_proj, dec.out_proj
    mem = ln(mp[2], ln(mp[0], ctx) @ mp[1].weight.t() + mp[1].bias)
    x = ln(tp[0], text) @ tp[1].weight.t() + tp[1].bias
    for layer in dec.layers:
        h = ln(layer.norm1, x)
        x = x + attn(layer.self_attn, h, h, layer.self_attn.num_heads)
        x = x + attn(layer.cross_attn, ln(layer.norm2, x), mem, layer.cross_attn.num_heads)
        f = layer.ffn
        x = x + F.gelu(ln(layer.norm3, x) @ f[0].weight.t() + f[0].bias) @ f[3].weight.t() \
            + f[3].bias
    v_post = ln(op[0], x) @ op[1].weight.t() + op[1].bias
    return text + dec.gamma * v_post, v_post


@pytest.mark.slow
def test_context_decoder_matches_explicit_computation():
    torch.manual_seed(0)
    dec = ContextDecoder(visual_dim=12, embed_dims=8, num_heads=2, num_layers=2, dropout=0.1)
    assert torch.all(dec.gamma == 1e-4) and dec.gamma.shape == (12, )
    with torch.no_grad():
        dec.gamma.copy_(torch.randn(12))  # per-channel scale
        for p in dec.parameters():  # non-trivial LayerNorm affine parameters and biases
            if p.dim() == 1 and p is not dec.gamma:
                p.add_(torch.randn_like(p) * 0.3)
    dec.eval()
    text, ctx = torch.randn(2, 5, 12), torch.randn(2, 7, 12)
    out = dec(text, ctx)
    expected, v_post = _explicit_decoder(dec, text, ctx)
    assert out.shape == (2, 5, 12)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    # residual + gamma: out - t is exactly gamma * v_post
    torch.testing.assert_close(out - text, dec.gamma * dec.decode(text, ctx), rtol=1e-5,
                               atol=1e-6)
    torch.testing.assert_close(dec.decode(text, ctx), v_post, rtol=1e-5, atol=1e-5)
    # a (K, C) text is shared by the batch
    torch.testing.assert_close(dec(text[0], ctx), dec(text[0].expand(2, -1, -1), ctx))
    # gamma = 0 returns the text untouched
    with torch.no_grad():
        dec.gamma.zero_()
    assert torch.equal(dec(text, ctx), text)


def test_context_decoder_attends_to_the_visual_context():
    torch.manual_seed(0)
    dec = ContextDecoder(visual_dim=12, embed_dims=8, num_heads=2, num_layers=1,
                         dropout=0.0).eval()
    text, ctx = torch.randn(1, 3, 12), torch.randn(1, 6, 12)
    base = dec.decode(text, ctx)
    # different context -> different update; the memory is a set (order does not matter)
    assert not torch.allclose(base, dec.decode(text, torch.randn(1, 6, 12)), atol=1e-4)
    torch.testing.assert_close(dec.decode(text, ctx[:, torch.randperm(6)]), base)
    # each class query sees the context independently of the batch's other images
    two = dec.decode(text.expand(2, -1, -1), torch.cat([ctx, torch.randn(1, 6, 12)]))
    torch.testing.assert_close(two[:1], base)
    with pytest.raises(ValueError, match='visual_context'):
        dec(text, torch.randn(1, 6, 10))


# ---------------------------------------------------------------- segmentor
@pytest.mark.slow
def test_score_map_and_fpn_inputs():
    model = _model().eval()
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        stages, score, text = model.forward_features(x)
        # independent recomputation from the parts
        c2, c3, c4, c5, dense, glob = model.backbone(x)
        raw = model.text_encoder(VOCAB, normalize=False)
        ctx = torch.cat([glob[:, None], dense.flatten(2).transpose(1, 2)], dim=1)
        refined = raw + model.context_decoder.gamma * model.context_decoder.decode(
            raw.expand(2, -1, -1), ctx)
        expected = torch.einsum('bchw,bkc->bkhw', dense / dense.norm(dim=1, keepdim=True),
                                refined / refined.norm(dim=-1, keepdim=True))
        neck_out = model.extract_feat(x)
    assert [tuple(s.shape) for s in stages] == [(2, 32, 16, 24), (2, 64, 8, 12),
                                                (2, 128, 4, 6), (2, 256 + K, 2, 3)]
    assert score.shape == (2, K, 2, 3) and text.shape == (2, K, 32)
    torch.testing.assert_close(text, refined, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(score, expected, rtol=1e-5, atol=1e-5)
    assert score.abs().max() <= 1 + 1e-5
    torch.testing.assert_close(stages[3][:, :256], c5)  # C5 first, then the score map
    torch.testing.assert_close(stages[3][:, 256:], score)
    torch.testing.assert_close(stages[0], c2)
    # the refined text differs from the raw one (the context decoder is in the path)
    assert not torch.allclose(text[0], raw, atol=1e-3)
    assert [tuple(t.shape) for t in neck_out] == [(2, 16, 16, 24), (2, 16, 8, 12),
                                                  (2, 16, 4, 6), (2, 16, 2, 3)]


@pytest.mark.slow
def test_losses_include_identity_aux_on_score_map_over_tau():
    model = _model(tau=0.05).train()
    x = torch.randn(2, 3, 64, 64)
    samples = _samples(2, 64, 64)
    losses = model.loss(x, samples)
    assert set(losses) == {'decode.loss_ce', 'decode.acc_seg', 'aux_identity.loss_ce',
                           'aux_identity.acc_seg'}
    # the aux loss is 0.4 * CE(upsampled score_map / tau) (no dropout on the score path)
    _, score, _ = model.forward_features(x)
    label = torch.cat([s.gt_sem_seg.data for s in samples])
    logits = F.interpolate(score / 0.05, size=(64, 64), mode='bilinear', align_corners=False)
    expected = 0.4 * F.cross_entropy(logits, label)
    torch.testing.assert_close(losses['aux_identity.loss_ce'], expected, rtol=1e-4, atol=1e-5)
    no_aux = _model(identity_head=None).train()
    assert set(no_aux.loss(x, samples)) == {'decode.loss_ce', 'decode.acc_seg'}


@pytest.mark.slow
def test_gradients_reach_prompts_and_decoder_not_frozen_tower():
    model = _model().train()
    losses = model.loss(torch.randn(2, 3, 64, 64), _samples(2, 64, 64))
    sum(v for k, v in losses.items() if 'loss' in k).backward()
    named = dict(model.named_parameters())
    for name in ('text_encoder.contexts', 'context_decoder.gamma',
                 'context_decoder.layers.0.cross_attn.q_proj.weight',
                 'context_decoder.memory_proj.1.weight', 'context_decoder.text_proj.1.weight',
                 'backbone.visual.attnpool.c_proj.weight', 'backbone.visual.conv1.weight',
                 'neck.lateral_convs.3.conv.weight', 'decode_head.conv_seg.weight'):
        grad = named[name].grad
        assert grad is not None and grad.abs().sum() > 0, name
    frozen = [n for n, p in named.items() if n.startswith('text_encoder.')
              and n != 'text_encoder.contexts']
    assert frozen and all(not named[n].requires_grad and named[n].grad is None for n in frozen)
    assert not hasattr(model.identity_head, 'conv_seg')


@pytest.mark.slow
def test_identity_aux_loss_alone_trains_the_prompts():
    """The aux loss reaches the contexts through the score map (Sec. 3.4)."""
    model = _model().train()
    x, samples = torch.randn(2, 3, 64, 64), _samples(2, 64, 64)
    _, score, _ = model.forward_features(x)
    model.identity_head.loss(score / model.tau, samples, None)['loss_ce'].backward()
    assert model.text_encoder.contexts.grad.abs().sum() > 0
    assert model.decode_head.conv_seg.weight.grad is None


@pytest.mark.parametrize('mode', ['whole', 'slide'])
@pytest.mark.slow
def test_predict_odd_sizes(mode):
    test_cfg = dict(mode='whole') if mode == 'whole' else dict(
        mode='slide', crop_size=(32, 32), stride=(24, 24))
    model = _model(test_cfg=test_cfg).eval()
    with torch.no_grad():
        out = model.predict(torch.randn(1, 3, 50, 70), _samples(1, 50, 70))
    assert out[0].pred_sem_seg.data.shape == (1, 50, 70)
    assert out[0].seg_logits.data.shape == (K, 50, 70)
    assert int(out[0].pred_sem_seg.data.max()) < K


def test_eval_text_features_are_cached_until_weights_change():
    model = _model().eval()
    first = model.text_features()
    assert model.text_features() is first and not first.requires_grad
    with torch.no_grad():
        model.text_encoder.contexts.add_(1.0)  # an optimizer step / load_state_dict
    second = model.text_features()
    assert second is not first and not torch.allclose(second, first)
    torch.testing.assert_close(second, model.text_encoder(VOCAB, normalize=False))
    with torch.inference_mode():
        assert model.text_features().is_inference()
    assert not model.text_features().is_inference()  # usable outside inference mode
    model.train()
    assert model.text_features().requires_grad


def test_vocabulary_size_is_fixed_and_channels_checked():
    model = _model()
    model.set_vocabulary(['cat', 'dog', 'bus'])
    assert model.vocabulary == ['cat', 'dog', 'bus']
    with pytest.raises(ValueError, match='fixed number of classes'):
        model.set_vocabulary(['cat', 'dog'])
    with pytest.raises(ValueError, match='neck.in_channels'):
        _model(neck=dict(type='FPN', in_channels=[32, 64, 128, 256], out_channels=16,
                         num_outs=4))
    with pytest.raises(ValueError, match='visual_dim'):
        _model(context_decoder=dict(type='ContextDecoder', visual_dim=64, embed_dims=16,
                                    num_heads=2, num_layers=1))


@pytest.mark.slow
def test_vit_backbone_is_accepted():
    vit = dict(embed_dim=32, vision_cfg=dict(image_size=32, layers=2, width=32, head_width=16,
                                             patch_size=8),
               text_cfg=TINY['text_cfg'])
    model = _model(
        backbone=dict(type='CLIPVisionTransformer', clip_model=vit, out_indices=(0, 1),
                      output_dense=True),
        score_concat_index=1,
        neck=dict(type='FPN', in_channels=[32, 32 + K], out_channels=16, num_outs=2),
        decode_head=dict(type='FPNHead', in_channels=[16] * 2, in_index=[0, 1],
                         feature_strides=[8, 8], channels=16,
                         norm_cfg=dict(type='BN', requires_grad=True))).eval()
    with torch.no_grad():
        stages, score, _ = model.forward_features(torch.randn(1, 3, 32, 48))
        logits = model._forward(torch.randn(1, 3, 32, 48))
    assert stages[1].shape == (1, 32 + K, 4, 6) and score.shape == (1, K, 4, 6)
    assert logits.shape[1] == K


# ---------------------------------------------------------------- converter
# The official checkpoints as recorded facts: tests/fixtures/official/denseclip_{r50,r101,
# vit-b}.json hold the official segmentors' state-dict keys and shapes (dumped by running the
# official code, see their "source"), filled here with random values.
R50_CFG = osp.join(REPO, 'configs', 'denseclip_fpn_r50_ade20k-512x512.py')
R101_CFG = osp.join(REPO, 'configs', 'denseclip_fpn_r101_ade20k-512x512.py')


def _converter():
    return load_tool('model_converters/denseclip2ovseg')


def _official_name(key: str) -> str:
    """Our key -> the official DenseCLIP (mmseg 0.x) name, written from the official layout:
    backbone without ``visual.``, the ViT's fpn1-fpn4 adapters under ``backbone.``, top-level
    ``contexts``/``gamma``, decoder layers under ``context_decoder.decoder`` with attention
    ``proj`` and ``mlp``. Shared by ``test_denseclip_vit``."""
    if key.startswith('backbone.visual.'):
        return 'backbone.' + key[len('backbone.visual.'):]
    if key.startswith('adapter.fpn'):
        return 'backbone.' + key[len('adapter.'):]
    if key == 'text_encoder.contexts':
        return 'contexts'
    if key == 'context_decoder.gamma':
        return 'gamma'
    if key.startswith('context_decoder.layers.'):
        key = key.replace('context_decoder.layers.', 'context_decoder.decoder.')
        key = key.replace('_attn.out_proj.', '_attn.proj.').replace('.ffn.', '.mlp.')
    return key


def shipped_model(config, **model_overrides):
    """The segmentor of a shipped config, no CLIP files (``pretrained=None``), built on the
    meta device (shapes only: a converted checkpoint is then loaded with ``assign=True``)."""
    cfg = Config.fromfile(config)
    cfg.model.backbone.pretrained = cfg.model.text_encoder.pretrained = None
    for path, value in model_overrides.items():
        node = cfg.model
        *parents, leaf = path.split('.')
        for part in parents:
            node = node[part]
        node[leaf] = value
    init_default_scope('mmseg')
    with torch.device('meta'):
        return MODELS.build(cfg.model)


def convert_official_into(name, model, seed=0):
    """Official ``name`` layout with random values -> converter -> strict load into ``model``.
    Returns the official state."""
    official = random_official_state(name, seed=seed)
    converted = _converter().convert_denseclip(official)
    result = model.load_state_dict(converted, strict=True, assign=True)
    assert not result.missing_keys and not result.unexpected_keys
    return official


def check_values_landed(model, official, text_rows=13):
    """Every tensor of ``model`` is the official one under its official name; the documented
    transforms only where the converter makes them."""
    state = model.state_dict()
    assert len(state) == len(official)  # one to one: nothing dropped, nothing invented
    for key, value in state.items():
        src = official[_official_name(key)]
        if key == 'text_encoder.contexts':
            src = src[0]  # official (1, N, W)
        elif key == 'text_encoder.positional_embedding':
            assert value.shape[0] == 77 and not value[text_rows:].any()  # zero padding
            value = value[:text_rows]
        elif key == 'backbone.visual.positional_embedding':
            # ViT: the official CLS token's second class embedding, folded into its row
            src = torch.cat([src[:1] + official['backbone.class_embedding'], src[1:]])
        assert torch.equal(value, src), key


@pytest.mark.slow
def test_converter_official_r50_into_the_shipped_config():
    keys = official_keys('denseclip_r50')
    assert keys['backbone.attnpool.positional_embedding'] == [1 + 16 * 16, 2048]
    assert keys['text_encoder.positional_embedding'] == [13, 512]
    assert keys['contexts'] == [1, 8, 512] and keys['gamma'] == [1024]
    model = shipped_model(R50_CFG)
    official = convert_official_into('denseclip_r50', model)
    check_values_landed(model, official)


@pytest.mark.slow
def test_converter_official_r101_into_the_shipped_config():
    """Official denseclip_fpn_res101_512x512_80k.py (layers [3, 4, 23, 3], 512-d embeddings)
    into the shipped RN101 config."""
    keys = official_keys('denseclip_r101')
    assert keys['gamma'] == [512] and keys['text_encoder.text_projection'] == [512, 512]
    assert 'backbone.layer3.22.conv1.weight' in keys
    model = shipped_model(R101_CFG)
    official = convert_official_into('denseclip_r101', model, seed=1)
    check_values_landed(model, official)


def _small_official(**extra):
    """The smallest official-layout state the converter accepts, with hand values."""
    state = {
        'contexts': torch.arange(6.).view(1, 3, 2),
        'gamma': torch.full((4, ), 1e-4),
        'text_encoder.positional_embedding': torch.tensor([[1., 2.], [3., 4.]]),
    }
    state.update(extra)
    return state


def test_converter_hand_values_text_positions_contexts_gamma():
    out = _converter().convert_denseclip(_small_official(), text_positions=4)
    assert torch.equal(out['text_encoder.contexts'], torch.tensor([[0., 1.], [2., 3.],
                                                                   [4., 5.]]))
    assert torch.equal(out['text_encoder.positional_embedding'],
                       torch.tensor([[1., 2.], [3., 4.], [0., 0.], [0., 0.]]))
    assert torch.equal(out['context_decoder.gamma'], torch.full((4, ), 1e-4))
    with pytest.raises(ValueError, match='more than --text-positions'):
        _converter().convert_denseclip(_small_official(), text_positions=1)


def test_load_time_attnpool_grid_resize_hand_values(tmp_path):
    """Official CLIPResNetWithAttention.init_weights: CLIP's attnpool grid resized bilinearly
    (align_corners=False) to input_resolution // 32 once at load, the mean-token row kept.
    A 2x2 grid [[0, 4], [8, 12]] at 4x4 samples rows/columns at 0, 1/4, 3/4, 1 of the way:
    value = 8 * row + 4 * column."""
    from mmseg_ovseg.clip.builder import create_clip
    clip = create_clip(TINY)  # image_size 64: a 2x2 grid
    with torch.no_grad():
        pos = clip.visual.attnpool.positional_embedding  # (1 + 4, 256)
        pos.zero_()
        pos[0] = 7.
        pos[1:, 0] = torch.tensor([0., 4., 8., 12.])
    torch.save(clip.state_dict(), tmp_path / 'clip.pt')
    backbone = initialized(MODELS.build(dict(type='CLIPResNetWithAttention', clip_model=TINY,
                                             pretrained=str(tmp_path / 'clip.pt'),
                                             input_resolution=128)))
    got = backbone.visual.attnpool.positional_embedding
    expected = torch.tensor([[0., 1., 3., 4.], [2., 3., 5., 6.], [6., 7., 9., 10.],
                             [8., 9., 11., 12.]]).flatten()
    assert got.shape == (1 + 16, 256)
    assert torch.equal(got[0], torch.full((256, ), 7.))
    torch.testing.assert_close(got[1:, 0], expected)
    assert not got[1:, 1:].any()


def test_converter_rejects_foreign_keys_and_writes_nothing(tmp_path, capsys):
    conv = _converter()
    official = {k: torch.empty(v, device='meta')
                for k, v in official_keys('denseclip_r50').items()}
    with pytest.raises(KeyError, match='backbone.fpn1.0.weight'):
        conv.convert_denseclip({**official, 'backbone.fpn1.0.weight': torch.zeros(1)})
    with pytest.raises(KeyError, match='context_decoder.decoder.0.foo'):
        conv.convert_denseclip({**official, 'context_decoder.decoder.0.foo': torch.zeros(1)})
    with pytest.raises(KeyError, match='gamma'):
        conv.convert_denseclip({k: v for k, v in official.items() if k != 'gamma'})
    src = tmp_path / 'bad.pth'
    torch.save({**_small_official(), 'extra.weight': torch.zeros(1)}, src)
    dst = tmp_path / 'never.pth'
    assert conv.main([str(src), str(dst)]) == 1  # the CLI: exit 1 and the key named
    err = capsys.readouterr().err
    assert err.startswith('error:') and 'extra.weight' in err and 'Traceback' not in err
    assert not dst.exists() and [p.name for p in tmp_path.iterdir()] == ['bad.pth']


def test_converter_cli_writes_a_loadable_checkpoint(tmp_path):
    src, dst = tmp_path / 'official.pth', tmp_path / 'out' / 'converted.pth'
    torch.save(dict(state_dict=_small_official(), meta=dict(iter=80000)), src)
    assert _converter().main([str(src), str(dst)]) == 0
    state = torch.load(dst, weights_only=True)['state_dict']
    assert set(state) == {'text_encoder.contexts', 'context_decoder.gamma',
                          'text_encoder.positional_embedding'}
    assert state['text_encoder.positional_embedding'].shape == (77, 2)


# ---------------------------------------------------------------- configs
def _groups_by_param(optim_wrapper, model):
    ids = {id(p): n for n, p in model.named_parameters()}
    return {ids[id(p)]: g for g in optim_wrapper.optimizer.param_groups for p in g['params']}


@pytest.mark.slow
def test_tiny_config_builds_and_trains_one_step():
    cfg = Config.fromfile(osp.join(REPO, 'configs', 'denseclip_tiny_synthetic.py'))
    cfg.model.data_preprocessor.size = (64, 64)  # smaller crops keep the test fast
    init_default_scope('mmseg')
    model = MODELS.build(cfg.model)
    model.init_weights()
    wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    groups = _groups_by_param(wrapper, model)
    base = cfg.optim_wrapper.optimizer.lr
    assert groups['text_encoder.contexts']['lr'] == base
    # the frozen text tower is not optimised at all (mmengine skips requires_grad=False)
    assert not any(n.startswith('text_encoder.') and n != 'text_encoder.contexts'
                   for n in groups)
    assert groups['backbone.visual.conv1.weight']['lr'] == base
    assert groups['context_decoder.layers.0.norm1.weight']['weight_decay'] == 0
    assert groups['context_decoder.gamma']['weight_decay'] > 0
    g = torch.Generator().manual_seed(0)
    data = dict(inputs=[torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8, generator=g)
                        for _ in range(2)],
                data_samples=_samples(2, 64, 64))
    for s in data['data_samples']:
        s.gt_sem_seg.data = torch.randint(0, 8, (1, 64, 64), generator=g)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    model.train()
    log = model.train_step(data, wrapper)
    assert {'decode.loss_ce', 'aux_identity.loss_ce'} <= set(log)
    assert torch.isfinite(log['loss'])
    after = dict(model.named_parameters())
    for name in ('text_encoder.contexts', 'context_decoder.gamma',
                 'context_decoder.layers.1.ffn.0.weight', 'backbone.visual.layer4.0.conv1.weight',
                 'neck.lateral_convs.3.conv.weight', 'decode_head.conv_seg.weight'):
        assert not torch.equal(before[name], after[name]), name
    assert torch.equal(before['text_encoder.token_embedding.weight'],
                       after['text_encoder.token_embedding.weight'])


@pytest.mark.slow
def test_ade20k_config_follows_the_official_recipe():
    cfg = Config.fromfile(osp.join(REPO, 'configs', 'denseclip_fpn_r50_ade20k-512x512.py'))
    m = cfg.model
    assert m.vocabulary == 'ade150' and m.tau == 0.07 and m.score_concat_index == 3
    assert m.neck.in_channels == [256, 512, 1024, 2048 + 150]
    assert m.identity_head.loss_decode.loss_weight == 0.4
    assert m.decode_head.loss_decode.loss_weight == 1.0
    assert m.context_decoder.num_layers == 3 and m.context_decoder.gamma_init == 1e-4
    assert (m.text_encoder.num_contexts, m.text_encoder.context_length) == (8, 13)
    opt = cfg.optim_wrapper
    assert opt.optimizer.type == 'AdamW' and opt.optimizer.lr == 1e-4
    assert opt.optimizer.weight_decay == 1e-4
    keys = opt.paramwise_cfg.custom_keys
    assert keys['backbone'].lr_mult == 0.1 and keys['text_encoder'].lr_mult == 0.0
    assert keys['text_encoder.contexts'].lr_mult == 1.0 and keys['norm'].decay_mult == 0.0
    assert cfg.train_cfg.max_iters == 80000 and cfg.train_dataloader.batch_size == 4
    assert cfg.auto_scale_lr.base_batch_size == 32
    warmup, poly = cfg.param_scheduler
    assert warmup.end == 1500 and warmup.start_factor == 1e-6
    assert (poly.begin, poly.end, poly.eta_min, poly.power) == (0, 80000, 1e-6, 0.9)
    assert m.test_cfg.mode == 'slide' and m.test_cfg.stride == (341, 341)
    # Trainable parts without weights (text tower excluded, as the README's 50.3M):
    init_default_scope('mmseg')
    parts = [MODELS.build(dict(m.backbone, pretrained=None)),
             MODELS.build(m.context_decoder), MODELS.build(m.neck),
             MODELS.build(dict(m.decode_head, num_classes=150))]
    counts = [sum(p.numel() for p in part.parameters()) for part in parts]
    assert abs(counts[1] - 3.95e6) < 0.005e6  # context decoder (reference: 3.95M)
    assert abs(sum(counts) - 50.3e6) < 0.1e6, counts
