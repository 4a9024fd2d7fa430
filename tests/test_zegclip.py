"""ZegCLIP checkpoints, text and configs: the official layouts through zegclip2ovseg, the CLS
fold, text embeddings and template lists vs the official ones, parameter counts, every config
building, a short tiny train + zero-shot eval. The tiny-width head, loss, zero-shot protocol and
metric tests are in test_zegclip_model.py."""
import json
import os.path as osp
import re

import pytest
import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmseg.registry import MODELS

import mmseg_ovseg  # noqa: F401  (registers everything)
from official_fixtures import FIXTURE_DIR, random_official_state
from tool_loader import load_tool


def initialized(module):
    """``module`` after ``init_weights()``: CLIP towers read ``pretrained`` there
    (mmengine's convention), not at construction."""
    module.init_weights()
    return module


REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
TINY_CLIP = dict(
    embed_dim=16,
    quick_gelu=False,
    vision_cfg=dict(image_size=32, layers=2, width=32, head_width=16, patch_size=8),
    text_cfg=dict(context_length=77, vocab_size=49408, width=16, heads=2, layers=1))


# ---------------------------------------------------------------- converter
def _converter():
    return load_tool('model_converters/zegclip2ovseg')


def _official_dropped(key: str) -> bool:
    """Official keys with no counterpart here: the decoder layers' never-called torch
    self-attention and its norm1, and the loss criterion's buffer."""
    return key.startswith('decode_head.loss_decode.') or bool(
        re.match(r'decode_head\.decoder_1\.layers\.\d+\.(self_attn|norm1)\.', key))


@pytest.mark.parametrize('config,fixture,prompts', [
    ('zegclip_vitb16_voc12-zs.py', 'zegclip_voc12', 10),
    ('zegclip_vitb16_coco-stuff-zs.py', 'zegclip_coco', 100),
])
@pytest.mark.slow
def test_converted_official_checkpoint_loads_strictly_into_config(config, fixture, prompts):
    """The official segmentor's key/shape list (tests/fixtures/official, recorded from the
    official code), filled with random values, converts and loads strictly into the model the
    shipped config builds; every official value arrives where the official forward uses it."""
    official = random_official_state(fixture)
    assert official['backbone.deep_prompt_embeddings'].shape == (11, prompts, 768)
    converted = _converter().convert_zegclip(official)
    cfg = Config.fromfile(osp.join(REPO, 'configs', config))
    cfg.model.backbone.pretrained = None
    cfg.model.text_encoder.pretrained = None
    init_default_scope('mmseg')
    model = MODELS.build(cfg.model)
    model.load_state_dict(converted, strict=True)  # raises on missing/unexpected/shape

    # nothing dropped but the official modules that have no use (numbers of values)
    own = model.state_dict()
    dropped = sum(v.numel() for k, v in official.items() if _official_dropped(k))
    assert sum(v.numel() for v in own.values()) == \
        sum(v.numel() for v in official.values()) - dropped
    torch.testing.assert_close(
        own['backbone.prompt_embeddings'],
        torch.cat([official['backbone.prompt_embeddings'],
                   official['backbone.deep_prompt_embeddings']]), rtol=0, atol=0)
    same = {
        'backbone.visual.conv1.weight': 'backbone.conv1.weight',
        'backbone.visual.proj': 'backbone.proj',
        'backbone.visual.transformer.resblocks.11.mlp.c_proj.weight':
        'backbone.transformer.resblocks.11.mlp.c_proj.weight',
        'backbone.prompt_proj.weight': 'backbone.prompt_proj.weight',
        'backbone.prompt_norm.bias': 'backbone.prompt_norm.bias',
        'text_encoder.token_embedding.weight': 'text_encoder.token_embedding.weight',
        'text_encoder.text_projection': 'text_encoder.text_projection',
        'decode_head.query_proj.weight': 'decode_head.q_proj.weight',
        'decode_head.layers.2.cross_attn.k_proj.bias':
        'decode_head.decoder_1.layers.2.multihead_attn.k.bias',
        'decode_head.layers.2.cross_attn.out_proj.weight':
        'decode_head.decoder_1.layers.2.multihead_attn.proj.weight',
        'decode_head.layers.0.norm1.weight': 'decode_head.decoder_1.layers.0.norm2.weight',
        'decode_head.layers.0.norm2.bias': 'decode_head.decoder_1.layers.0.norm3.bias',
        'decode_head.layers.1.ffn.0.weight': 'decode_head.decoder_1.layers.1.linear1.weight',
        'decode_head.layers.1.ffn.3.bias': 'decode_head.decoder_1.layers.1.linear2.bias',
    }
    for ours, theirs in same.items():
        assert torch.equal(own[ours], official[theirs]), ours

    # The CLS token entering ln_pre, written as the official VPTCLIPVisionTransformer.forward
    # builds it: class_embedding + (positional_embedding[0] + class_embedding).
    cls, pos = official['backbone.class_embedding'], official['backbone.positional_embedding']
    expected_cls = cls + (pos[0] + cls)
    backbone = model.backbone.eval()
    backbone.visual.ln_pre = nn.Identity()
    with torch.no_grad():
        tokens, hw = backbone.embed(torch.randn(1, 3, 64, 64))
    assert hw == (4, 4)
    torch.testing.assert_close(tokens[0, 0], expected_cls, rtol=0, atol=1e-6)
    # the patch rows of the position table are the official ones (32 x 32 grid, unchanged)
    assert torch.equal(own['backbone.visual.positional_embedding'][1:], pos[1:])


def test_converter_cls_fold_by_hand_and_errors(tmp_path):
    """CLS = 2 * class_embedding + positional_embedding[0] after conversion (the official
    forward's token), pinned with values written out by hand; the CLI path writes the same."""
    conv = _converter()
    official = {
        'backbone.class_embedding': torch.tensor([1.0, -2.0, 0.5]),
        'backbone.positional_embedding': torch.tensor([[10.0, 20.0, 30.0],
                                                       [1.0, 2.0, 3.0]]),
    }
    path = tmp_path / 'official.pth'
    torch.save(dict(state_dict=official, meta=dict()), path)
    dst = tmp_path / 'out' / 'converted.pth'
    conv.main([str(path), str(dst)])
    state = torch.load(dst, weights_only=True)['state_dict']
    cls = state['backbone.visual.class_embedding']
    pos = state['backbone.visual.positional_embedding']
    assert cls.tolist() == [1.0, -2.0, 0.5]
    assert pos.tolist() == [[11.0, 18.0, 30.5], [1.0, 2.0, 3.0]]
    # the token open_clip builds (class_embedding + positional row 0) is the official one
    assert (cls + pos[0]).tolist() == [12.0, 16.0, 31.0]
    # the input is not modified
    assert official['backbone.positional_embedding'][0].tolist() == [10.0, 20.0, 30.0]
    with pytest.raises(KeyError, match='not in the official'):
        conv.convert_zegclip({**official, 'backbone.foo': torch.zeros(1)})
    with pytest.raises(KeyError, match='only one of'):
        conv.convert_zegclip({'backbone.class_embedding': torch.zeros(3)})
    with pytest.raises(ValueError, match='does not fit'):
        conv.convert_zegclip({'backbone.class_embedding': torch.zeros(4),
                              'backbone.positional_embedding': torch.zeros(2, 3)})


def test_fold_class_embedding_on_pretrained_clip_by_hand(tmp_path):
    """``fold_class_embedding`` gives CLIP weights loaded through ``pretrained`` the official
    ZegCLIP CLS token (2 * class_embedding + positional_embedding[0]), and nothing else."""
    from mmseg_ovseg.clip.builder import create_clip
    from mmseg_ovseg.models.backbones.clip_vit import CLIPVisionTransformer
    clip_cfg = dict(TINY_CLIP, quick_gelu=True)
    torch.manual_seed(0)
    state = create_clip(clip_cfg).state_dict()
    width = state['visual.class_embedding'].shape[0]
    c = [i / 10 for i in range(width)]
    p0 = [1 - i / 100 for i in range(width)]
    state['visual.class_embedding'] = torch.tensor(c)
    state['visual.positional_embedding'][0] = torch.tensor(p0)
    ckpt = tmp_path / 'clip.pth'
    torch.save(state, ckpt)

    def cls_token(**kwargs):
        bb = initialized(CLIPVisionTransformer(clip_cfg, pretrained=str(ckpt), **kwargs)).eval()
        bb.visual.ln_pre = nn.Identity()
        with torch.no_grad():
            return bb, bb.embed(torch.randn(1, 3, 32, 32))[0][0, 0]

    folded, token = cls_token(fold_class_embedding=True)
    torch.testing.assert_close(token, torch.tensor([2 * a + b for a, b in zip(c, p0)]),
                               rtol=0, atol=1e-6)
    # only row 0 of the position table changes; the class embedding stays CLIP's
    assert torch.equal(folded.visual.class_embedding, torch.tensor(c))
    assert torch.equal(folded.visual.positional_embedding[1:],
                       state['visual.positional_embedding'][1:])
    plain, token = cls_token()
    torch.testing.assert_close(token, torch.tensor([a + b for a, b in zip(c, p0)]),
                               rtol=0, atol=1e-6)
    # folded before the pos_grid resize, which keeps the CLS row
    resized, token = cls_token(fold_class_embedding=True, pos_grid=(8, 8))
    torch.testing.assert_close(token, torch.tensor([2 * a + b for a, b in zip(c, p0)]),
                               rtol=0, atol=1e-6)
    # without pretrained weights there is nothing to fold (converted checkpoints are folded)
    torch.manual_seed(1)
    a = CLIPVisionTransformer(clip_cfg, fold_class_embedding=True)
    torch.manual_seed(1)
    b = CLIPVisionTransformer(clip_cfg)
    assert torch.equal(a.visual.positional_embedding, b.visual.positional_embedding)


# ---------------------------------------------------------------- text (official facts)
def _official_text():
    with open(osp.join(FIXTURE_DIR, 'zegclip_text.json')) as f:
        return json.load(f)


@pytest.mark.parametrize('name,kind', [
    ('zegclip_vitb16_voc12-zs.py', 'voc'), ('zegclip_vitb16_voc12-zs-st.py', 'voc'),
    ('zegclip_vitb16_voc12-fully.py', 'voc'), ('zegclip_vitb16_coco-stuff-zs.py', 'coco'),
    ('zegclip_vitb16_coco-stuff-zs-st.py', 'coco')])
def test_config_text_matches_official_embeddings(name, kind):
    """Templates and class names of each config are those of the notebook that made the
    official text embeddings (recorded in tests/fixtures/official/zegclip_text.json):
    VOC 'a photo of a {}' without a period, COCO the 15-template ensemble, word by word."""
    from mmseg_ovseg.clip import get_templates, get_vocabulary
    official = _official_text()
    cfg = Config.fromfile(osp.join(REPO, 'configs', name))
    expected = official['single_template'] if kind == 'voc' else official['coco_templates']
    assert get_templates(cfg.model.templates) == expected
    assert 'templates' not in cfg.model.text_encoder  # set once, on the segmentor
    classes = official['voc12_classes' if kind == 'voc' else 'coco_classes']
    assert get_vocabulary(cfg.model.vocabulary) == classes
    if kind == 'voc':
        # the notebook formats f"a photo of a {c}"
        assert get_templates(cfg.model.templates)[0].format('sheep') == 'a photo of a sheep'


def test_named_zegclip_templates_are_the_official_lists():
    from mmseg_ovseg.clip import get_templates
    official = _official_text()
    assert get_templates('zegclip') == official['coco_templates']
    assert get_templates('zegclip_voc') == official['single_template']


# ---------------------------------------------------------------- configs
def _count(model):
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize('name,prompts', [('zegclip_vitb16_voc12-zs.py', 10),
                                          ('zegclip_vitb16_coco-stuff-zs.py', 100)])
@pytest.mark.slow
def test_vitb16_configs_trainable_parameters(name, prompts):
    """The image tower and the head of the real configs (the frozen text tower adds nothing
    trainable; building it is left to the full-model check in the report)."""
    cfg = Config.fromfile(osp.join(REPO, 'configs', name))
    cfg.model.backbone.pretrained = None
    backbone = MODELS.build(cfg.model.backbone)
    head = MODELS.build(dict(cfg.model.decode_head, num_classes=20))
    assert backbone.prompt_embeddings.shape == (12, prompts, 768)
    # the official checkpoints' 32x32 (+ CLS) position table (their CLS row is folded by the
    # converter, see test_converted_official_checkpoint_loads_strictly_into_config)
    assert backbone.visual.positional_embedding.shape == (1 + 32 * 32, 768)
    trainable = _count(backbone) + _count(head)
    # official (README): 13.82M VOC / 14.65M COCO, which include 3 x (1,050,624 + 1,024)
    # parameters of decoder self-attention + norm1 that the official forward never uses.
    unused_official = 3 * (3 * 512 * 512 + 3 * 512 + 512 * 512 + 512 + 2 * 512)
    official = {10: 13.82e6, 100: 14.65e6}[prompts]
    assert abs(trainable + unused_official - official) < 0.005e6
    print(f'{name}: {trainable} trainable (+{unused_official} unused official = '
          f'{trainable + unused_official})')


@pytest.mark.parametrize('name', ['zegclip_vitb16_voc12-zs-st.py', 'zegclip_vitb16_voc12-fully.py',
                                  'zegclip_vitb16_coco-stuff-zs-st.py'])
def test_variant_configs(name):
    cfg = Config.fromfile(osp.join(REPO, 'configs', name))
    if 'st' in name.split('-')[-1]:
        assert cfg.model.self_training and cfg.model.seen_calibration == 0
        assert cfg.load_from and 'zs/iter_' in cfg.load_from
        pipes = [d.pipeline for d in cfg.train_dataloader.dataset.get('datasets', [])] or \
            [cfg.train_dataloader.dataset.pipeline]
        for pipe in pipes:
            assert dict(pipe[-2])['mode'] == 'transductive'
    else:
        assert cfg.model.zero_shot_split is None
        for d in cfg.train_dataloader.dataset.datasets:
            assert all(t['type'] != 'ZeroShotLabelMapping' for t in d.pipeline)
    assert cfg.val_evaluator.type == 'ZeroShotIoUMetric'


@pytest.mark.slow
def test_every_zegclip_config_builds_the_official_cls_token_and_no_drop_path():
    """Each ZegCLIP config folds class_embedding into CLIP's position row at load (the
    official CLS token); the ViT-B ones train without stochastic depth, as the official
    blocks never call their DropPath."""
    import glob
    # The configs for OpenAI's ViT-B/16 (the tiny-CLIP concept configs load our own
    # pretrained tower, which never had the double class embedding).
    names = sorted(glob.glob(osp.join(REPO, 'configs', 'zegclip_vitb16_*.py')))
    assert len(names) >= 7, names  # VOC zs/st/fully, COCO zs/st, COCO -> VOC / PC-59
    names.append(osp.join(REPO, 'configs', 'zegclip_tiny_synthetic-zs.py'))
    for name in names:
        backbone = Config.fromfile(name).model.backbone
        assert backbone.fold_class_embedding is True, name
        assert backbone.get('drop_path_rate', 0.0) == 0.0, name


# ---------------------------------------------------------------- end to end
@pytest.mark.slow
def test_tiny_config_short_train_and_zero_shot_eval(tmp_path):
    """The tiny config trains a few iterations through mmengine's Runner on seen classes and
    evaluates all classes with the zero-shot metric; its checkpoint feeds self-training."""
    from mmengine.runner import Runner

    from mmseg_ovseg.datasets.synthetic import generate_synthetic_dataset
    data_root = str(tmp_path / 'data')
    generate_synthetic_dataset(data_root, num_train=4, num_val=2, seed=0, size=64)

    def config(work_dir, max_iters=2):
        cfg = Config.fromfile(osp.join(REPO, 'configs', 'zegclip_tiny_synthetic-zs.py'))
        clip = cfg.clip_model
        clip.vision_cfg.update(image_size=64, layers=2, width=32, patch_size=16)
        clip.text_cfg.update(width=16, layers=1)
        clip.embed_dim = 16
        cfg.model.backbone.update(clip_model=clip, out_indices=(1, ), prompt_depth=2)
        cfg.model.text_encoder.clip_model = clip
        cfg.model.decode_head.update(in_channels=16, channels=16, num_heads=2,
                                     feedforward_channels=32)
        cfg.model.data_preprocessor.size = (64, 64)
        pipe = cfg.train_dataloader.dataset.pipeline
        pipe[2] = dict(type='RandomResize', scale=(64, 64), ratio_range=(1.0, 1.0),
                       keep_ratio=True)
        pipe[3] = dict(type='RandomCrop', crop_size=(64, 64))
        cfg.test_pipeline[1] = dict(type='Resize', scale=(64, 64), keep_ratio=True)
        for loader in (cfg.train_dataloader, cfg.val_dataloader):
            loader.update(num_workers=0, persistent_workers=False)
            loader.dataset.data_root = data_root
        cfg.val_dataloader.dataset.pipeline = cfg.test_pipeline
        cfg.train_dataloader.batch_size = 2
        cfg.test_dataloader = cfg.val_dataloader
        cfg.train_cfg.update(max_iters=max_iters, val_interval=max_iters)
        cfg.param_scheduler = [dict(type='PolyLR', power=0.9, begin=0, end=max_iters,
                                    by_epoch=False)]
        cfg.default_hooks.checkpoint.update(interval=max_iters)
        cfg.work_dir = work_dir
        return cfg

    runner = Runner.from_cfg(config(str(tmp_path / 'work')))
    runner.train()
    metrics = runner.val()
    assert set(metrics) >= {'pAcc', 'mIoU_seen', 'mIoU_unseen', 'hIoU'}
    assert 0 <= metrics['pAcc'] <= 100

    st = config(str(tmp_path / 'st'))
    st.model.update(self_training=True, seen_calibration=0.0)
    st.train_dataloader.dataset.pipeline[-2]['mode'] = 'transductive'
    st.load_from = str(tmp_path / 'work' / 'iter_2.pth')
    runner = Runner.from_cfg(st)
    runner.train()
    assert runner.model.self_training


def test_converter_pos_grid_resize_by_hand():
    """``--pos-grid``: the CLS row is kept (after the fold) and the grid is resized bilinearly
    (align_corners=False): 2x2 -> 1x1 samples the centre, i.e. the mean of the four rows."""
    conv = _converter()
    grid_rows = [[1.0, 0.0], [3.0, 4.0], [5.0, 8.0], [7.0, 12.0]]
    official = {'backbone.class_embedding': torch.tensor([1.0, 1.0]),
                'backbone.positional_embedding': torch.tensor([[10.0, 20.0]] + grid_rows)}
    pos = conv.convert_zegclip(official, pos_grid=(1, 1))['backbone.visual.positional_embedding']
    assert pos.tolist() == [[11.0, 21.0], [4.0, 6.0]]
    with pytest.raises(ValueError, match='square'):
        conv.convert_zegclip({'backbone.class_embedding': torch.zeros(2),
                              'backbone.positional_embedding': torch.zeros(4, 2)}, pos_grid=(1, 1))
