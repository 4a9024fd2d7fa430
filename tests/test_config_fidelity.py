"""CLIP towers meant for OpenAI weights are QuickGELU towers: the builder refuses an OpenAI
checkpoint for an ``nn.GELU`` tower, and every shipped config asks for QuickGELU where it loads
OpenAI weights.

OpenAI trained every released CLIP with QuickGELU; open_clip's plain names ('RN50', 'ViT-B-16')
build ``nn.GELU``. Both load the same keys and shapes, so a wrong name used to change the
activations silently (issue 9: DenseCLIP's RN50 config, score map off by 1.3%).
"""
import glob
import os.path as osp

import open_clip
import pytest
import torch
from mmengine.config import Config
from open_clip.transformer import QuickGELU

from mmseg_ovseg.clip import builder
from mmseg_ovseg.clip.builder import (
    build_text_tower,
    build_visual_tower,
    create_clip,
    get_clip_config,
    load_tower_weights,
)

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIGS = sorted(glob.glob(osp.join(REPO, 'configs', '*.py')))
# A tiny CLIP ResNet (as RN50: the image tower has no GELU, the text tower has one per block).
TINY_RN = dict(
    embed_dim=32,
    vision_cfg=dict(image_size=64, layers=[1, 1, 1, 1], width=8, head_width=32),
    text_cfg=dict(context_length=77, vocab_size=49408, width=32, heads=2, layers=2))
TINY_VIT = dict(
    embed_dim=32,
    vision_cfg=dict(image_size=32, layers=2, width=32, head_width=16, patch_size=16),
    text_cfg=dict(context_length=77, vocab_size=49408, width=32, heads=2, layers=2))


def _quick(cfg, quick=True):
    return dict(cfg, quick_gelu=quick)


def _openai_archive(path, cfg, seed=0):
    """A TorchScript archive as OpenAI ships CLIP: the scripted model, with the
    ``input_resolution``/``context_length``/``vocab_size`` entries next to the weights."""
    torch.manual_seed(seed)
    clip = open_clip.CLIP(**get_clip_config(_quick(cfg))).eval()
    for key, value in (('input_resolution', cfg['vision_cfg']['image_size']),
                       ('context_length', 77), ('vocab_size', 49408)):
        if hasattr(clip, key):
            delattr(clip, key)  # open_clip keeps these as plain ints
        clip.register_buffer(key, torch.tensor(value))
    # OpenAI's model keeps the causal mask as a plain attribute (not in its state dict);
    # scripting would make open_clip's non-persistent buffer persistent.
    mask = clip._buffers.pop('attn_mask')
    clip.attn_mask = mask
    torch.jit.save(torch.jit.script(clip), str(path))
    return clip


# ---------------------------------------------------------------- builder guard
@pytest.mark.slow
def test_torchscript_archive_refused_for_gelu_towers_with_the_fix_named(tmp_path):
    path = tmp_path / 'RN_tiny.pt'
    clip = _openai_archive(path, TINY_RN)
    assert builder._is_torchscript_archive(str(path))
    assert 'TorchScript' in builder.openai_origin(str(path))

    text = build_text_tower(_quick(TINY_RN, False))
    before = {k: v.clone() for k, v in text.state_dict().items()}
    with pytest.raises(ValueError, match=r'OpenAI CLIP checkpoint.*QuickGELU.*'
                       r"2 transformer blocks.*'-quickgelu'.*quick_gelu=True"):
        load_tower_weights(text, str(path), 'text')
    assert all(torch.equal(v, before[k]) for k, v in text.state_dict().items())  # untouched
    with pytest.raises(ValueError, match='QuickGELU'):
        create_clip(_quick(TINY_RN, False), str(path))

    # QuickGELU towers load it; the ResNet image tower has no GELU and loads either way.
    text = build_text_tower(_quick(TINY_RN))
    load_tower_weights(text, str(path), 'text')
    assert torch.equal(text.text_projection, clip.text_projection)
    for quick in (True, False):
        visual = build_visual_tower(_quick(TINY_RN, quick))
        load_tower_weights(visual, str(path), 'visual')
        assert torch.equal(visual.attnpool.c_proj.weight, clip.visual.attnpool.c_proj.weight)
    assert isinstance(create_clip(_quick(TINY_RN), str(path)).transformer.resblocks[0].mlp.gelu,
                      QuickGELU)


@pytest.mark.slow
def test_vit_image_tower_is_checked_too(tmp_path):
    path = tmp_path / 'ViT_tiny.pt'
    _openai_archive(path, TINY_VIT)
    with pytest.raises(ValueError, match=r'2 transformer blocks of the visual tower'):
        load_tower_weights(build_visual_tower(_quick(TINY_VIT, False)), str(path), 'visual')
    load_tower_weights(build_visual_tower(_quick(TINY_VIT)), str(path), 'visual')


@pytest.mark.slow
def test_state_dict_from_an_openai_archive_is_recognised(tmp_path):
    archive = tmp_path / 'RN_tiny.pt'
    _openai_archive(archive, TINY_RN)
    state = torch.jit.load(str(archive)).state_dict()
    assert {'input_resolution', 'context_length', 'vocab_size'} <= set(state)
    resaved = tmp_path / 'resaved.pth'
    torch.save(dict(state), resaved)
    assert 'input_resolution' in builder.openai_origin(str(resaved))
    with pytest.raises(ValueError, match="QuickGELU.*'-quickgelu'"):
        load_tower_weights(build_text_tower(_quick(TINY_RN, False)), str(resaved), 'text')
    # wrapped as mmengine/open_clip checkpoints are, too
    wrapped = tmp_path / 'wrapped.pth'
    torch.save(dict(state_dict=dict(state)), wrapped)
    with pytest.raises(ValueError, match='QuickGELU'):
        load_tower_weights(build_text_tower(_quick(TINY_RN, False)), str(wrapped), 'text')


def test_plain_clip_state_dict_is_not_an_openai_release(tmp_path):
    """open_clip state dicts (e.g. LAION's GELU models) share OpenAI's key layout and carry no
    marker: they load into whatever tower the config names."""
    gelu = create_clip(_quick(TINY_RN, False))
    path = tmp_path / 'laion_like.pt'
    torch.save(gelu.state_dict(), path)
    assert builder.openai_origin(str(path)) is None
    text = build_text_tower(_quick(TINY_RN, False))
    load_tower_weights(text, str(path), 'text')
    assert torch.equal(text.token_embedding.weight, gelu.token_embedding.weight)


@pytest.mark.parametrize('name', ['RN50', 'RN101', 'ViT-B-16', 'ViT-L-14', 'ViT-L-14-336'])
def test_error_names_the_exact_quickgelu_model(name):
    with torch.device('meta'):  # shapes only, no memory
        state = open_clip.CLIP(**get_clip_config(name)).state_dict()
    assert builder.guess_openai_model(state) == name
    with torch.device('meta'):
        text = build_text_tower(name)
    with pytest.raises(ValueError, match=f"clip_model='{name}-quickgelu' instead of '{name}'"):
        builder._check_quickgelu(text, f'{name}.pt', 'a TorchScript archive', state, 'text')
    with torch.device('meta'):
        builder._check_quickgelu(build_text_tower(f'{name}-quickgelu'), f'{name}.pt',
                                 'a TorchScript archive', state, 'text')


def test_gelu_blocks_finds_the_clip_block_activations():
    assert builder.gelu_blocks(build_text_tower(_quick(TINY_RN, False))) == [
        'transformer.resblocks.0', 'transformer.resblocks.1']
    assert builder.gelu_blocks(build_text_tower(_quick(TINY_RN))) == []
    assert builder.gelu_blocks(build_visual_tower(_quick(TINY_RN, False))) == []  # ResNet


# ---------------------------------------------------------------- shipped configs
# open_clip architectures of OpenAI's CLIP releases (RN50, RN101, ..., ViT-L-14-336).
OPENAI_MODELS = tuple(open_clip.list_openai_models())


def _signature(clip_model):
    cfg = get_clip_config(clip_model)
    v = cfg['vision_cfg']
    return (cfg['embed_dim'], repr(v.get('layers')), v.get('width'), v.get('patch_size'),
            v.get('head_width', 64), repr(sorted(cfg['text_cfg'].items())))


def openai_architecture(clip_model):
    """The OpenAI release a ``clip_model`` (name or dict) builds, or None. Image size is not
    compared: configs resize position grids."""
    sig = _signature(clip_model)
    for name in OPENAI_MODELS:
        if _signature(name) == sig:
            return name
    return None


def clip_towers(node, path='model'):
    """Every dict with a ``clip_model`` under ``node`` (recursively): ``[(path, dict)]``."""
    found = []
    if isinstance(node, dict):
        if 'clip_model' in node:
            found.append((path, node))
        for key, value in node.items():
            found += clip_towers(value, f'{path}.{key}')
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            found += clip_towers(value, f'{path}[{i}]')
    return found


def quickgelu_violations(model_cfg):
    """Towers meant for OpenAI weights that do not build QuickGELU.

    Meant for OpenAI weights: a ``pretrained`` file and an OpenAI architecture. Other
    architectures cannot receive OpenAI weights (the loader is strict about keys and shapes),
    and random-init towers have none; should a config ever load non-OpenAI weights into an
    OpenAI architecture (e.g. LAION's GELU ViT-B-16), it is reported here and needs an explicit
    exception.
    """
    bad = []
    for path, tower in clip_towers(model_cfg):
        if tower.get('pretrained') is None:
            continue  # random init (tiny CPU demos): no OpenAI weights to match
        arch = openai_architecture(tower['clip_model'])
        if arch is not None and not get_clip_config(tower['clip_model'])['quick_gelu']:
            bad.append(f'{path}: OpenAI {arch} weights {tower["pretrained"]!r} into '
                       f'{tower["clip_model"]!r} (nn.GELU); use \'{arch}-quickgelu\'')
    return bad


def test_the_check_catches_plain_openai_names():
    model = dict(
        backbone=dict(type='CLIPResNetWithAttention', clip_model='RN50',
                      pretrained='pretrained/RN50.pt'),
        text_encoder=dict(clip_model='RN50-quickgelu', pretrained='pretrained/RN50.pt'),
        decode_head=[dict(clip_model=dict(get_clip_config('ViT-B-16'), quick_gelu=False),
                          pretrained='ViT-B-16.pt')],
        tiny=dict(clip_model=TINY_RN, pretrained=None))
    bad = quickgelu_violations(model)
    assert len(bad) == 2
    assert bad[0].startswith('model.backbone: OpenAI RN50') and "'RN50-quickgelu'" in bad[0]
    assert bad[1].startswith('model.decode_head[0]: OpenAI ViT-B-16')
    # a tiny architecture cannot hold OpenAI weights: not checked
    assert quickgelu_violations(dict(b=dict(clip_model=TINY_RN, pretrained='x.pt'))) == []


@pytest.mark.parametrize('path', CONFIGS, ids=[osp.basename(p) for p in CONFIGS])
@pytest.mark.slow
def test_shipped_config_openai_towers_are_quickgelu(path):
    cfg = Config.fromfile(path)
    assert quickgelu_violations(cfg.model.to_dict()) == []


@pytest.mark.slow
def test_configs_with_openai_weights_are_all_seen():
    """The walk finds the towers of every config that loads CLIP weights (so a renamed field
    cannot make the check above pass vacuously)."""
    towers = {}
    for path in CONFIGS:
        found = [(p, t) for p, t in clip_towers(Config.fromfile(path).model.to_dict())
                 if t.get('pretrained') is not None]
        if found:
            towers[osp.basename(path)] = sorted(p for p, _ in found)
    assert towers['denseclip_fpn_r50_ade20k-512x512.py'] == ['model.backbone',
                                                             'model.text_encoder']
    assert towers['denseclip_fpn_vit-b16_ade20k-640x640.py'] == ['model.backbone',
                                                                 'model.text_encoder']
    for prefix in ('zegclip_vitb16', 'san_vitb16', 'san_vitl14'):
        assert any(name.startswith(prefix) for name in towers), prefix
