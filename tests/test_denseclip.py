"""DenseCLIP checkpoints and configs: the official R50/R101 layouts through the converter into the
shipped configs, hand-value and error checks, the tiny and ADE20K configs; the shared tiny-model
helpers. The tiny-width model tests are in test_denseclip_model.py."""
import os.path as osp

import pytest
import torch
from mmengine.config import Config, ConfigDict
from mmengine.logging import MMLogger
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope
from mmengine.structures import PixelData
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample

import mmseg_ovseg  # noqa: F401  (registers everything)
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
