"""SegViT checkpoints: the official layouts through segvit2ovseg into the shipped configs, the
official patch bias in every config, checked pretrained ViT loading (split from
test_segvit.py; tests unchanged)."""
import glob
import os.path as osp
import re

import pytest
import torch
from mmengine.config import Config
from mmseg.models.backbones import VisionTransformer
from mmseg.registry import MODELS

import mmseg_ovseg  # noqa: F401  (registers the plugin's modules)
from mmseg_ovseg.models.backbones.shrunk_vit import ShrunkVisionTransformer
from mmseg_ovseg.models.backbones.strict_vit import StrictVisionTransformer
from mmseg_ovseg.utils.strict_load import StateDictMismatchError
from official_fixtures import official_keys
from test_segvit import ROOT, VIT
from tool_loader import load_tool

# ---------------------------------------------------------------- official checkpoint converter
# Layouts recorded from the official code (tests/fixtures/official/segvit*_vit-l_ade.json, see
# their "source"): official key/shape list -> segvit2ovseg -> strict load into the model of the
# shipped ADE config, at full ViT-L size. Every official tensor is a stride-0 expanded scalar
# holding its own index, so the ViT-L state costs no memory, a saved file is a few hundred KB,
# and each model tensor shows which official tensor it received.
SEGVIT_CFG = osp.join(ROOT, 'configs', 'segvit_vit-l16_ade20k-640x640.py')
SHRUNK_CFG = osp.join(ROOT, 'configs', 'segvit-shrunk_vit-l16_ade20k-640x640.py')
FIXTURES = {False: ('segvit_vit-l_ade', SEGVIT_CFG), True: ('segvit-shrunk_vit-l_ade', SHRUNK_CFG)}


def _converter():
    return load_tool('model_converters/segvit2ovseg')


def _indexed_official(name):
    """The official layout ``name``, tensor ``i`` = ``i`` everywhere (expanded, no memory)."""
    return {k: torch.tensor(float(i)).expand(shape)
            for i, (k, shape) in enumerate(official_keys(name).items())}


def _official_name(key, shrunk):
    """The official key whose tensor our ``key`` must receive, written from the official module
    names (ATMHead / TPNATMHead, TPN_DecoderLayer), independently of the converter."""
    if key.startswith('backbone.'):
        return key
    atm = 'decode_head.atm.' if shrunk else 'decode_head.'
    for ours, theirs, prefix in (('decode_head.', atm, 'ATM'), ('neck.', 'decode_head.', 'QU')):
        if not key.startswith(ours):
            continue
        name = key[len(ours):]
        if name.startswith('queries.'):
            return theirs + 'q.' + name[len('queries.'):]
        if name.startswith('class_embed.'):
            return theirs + name
        kind, n, rest = name.split('.', 2)  # input_proj.0.weight, decoders.0.layers.1...
        stage = {'decoders': 'decoder'}.get(kind, kind) + f'_{int(n) + 1}'
        if prefix == 'ATM':
            for a, b in (('.cross_attn.', '.multihead_attn.'), ('.ffn.0.', '.linear1.'),
                         ('.ffn.3.', '.linear2.')):
                rest = rest.replace(a, b)
        return f'{theirs}{stage}.{rest}'
    raise AssertionError(f'unexpected model key {key}')


def _shipped_model(config):
    """The segmentor of a shipped config at full size (nothing loaded: ``init_weights`` is not
    called, so the pretrained file is not read)."""
    cfg = Config.fromfile(config)
    return MODELS.build(cfg.model)


@pytest.mark.parametrize('shrunk', [False, True])
@pytest.mark.slow
def test_official_checkpoint_converts_and_loads_strictly_into_the_shipped_config(
        shrunk, tmp_path, capsys):
    """Fails without ``patch_bias=True`` in the config (the official checkpoints carry
    ``backbone.patch_embed.projection.bias``: unexpected key) and with any converter key slip."""
    name, config = FIXTURES[shrunk]
    keys = official_keys(name)
    assert keys['backbone.patch_embed.projection.bias'] == [1024]
    assert keys['backbone.pos_embed'] == [1, 1 + 40 * 40, 1024]
    official = _indexed_official(name)
    index = {k: i for i, k in enumerate(official)}
    src, dst = tmp_path / 'official.pth', tmp_path / 'converted.pth'
    torch.save(dict(state_dict=official, meta=dict(iter=160000)), src)
    assert src.stat().st_size < 2**20  # expanded tensors: one value each on disk
    assert _converter().main([str(src), str(dst)]) == 0
    assert 'converted' in capsys.readouterr().out
    saved = torch.load(dst, weights_only=True)
    assert saved['meta'] == dict(converted_from='official.pth', converter='segvit2ovseg')
    state = saved['state_dict']

    model = _shipped_model(config)
    assert isinstance(model.backbone, StrictVisionTransformer)
    assert (type(model.backbone) is ShrunkVisionTransformer) == shrunk
    result = model.load_state_dict(state, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    # one to one: each model tensor is the official tensor of the documented mapping; only the
    # loss buffers are dropped
    ours = model.state_dict()
    dropped = {k for k in official if '.loss_decode.' in k}
    assert len(ours) == len(official) - len(dropped) and len(dropped) == 1 + shrunk
    for key, value in ours.items():
        expected = index[_official_name(key, shrunk)]
        assert value.flatten()[0] == expected and value.flatten()[-1] == expected, key


def test_official_converter_rejects_incomplete_or_foreign_layouts(tmp_path, capsys):
    conv = _converter()
    for name, _ in FIXTURES.values():
        official = {k: torch.empty(v, device='meta') for k, v in official_keys(name).items()}
        for key in ('backbone.patch_embed.projection.bias', 'backbone.layers.23.ln2.bias',
                    'backbone.cls_token'):
            with pytest.raises(KeyError, match=re.escape(key)):
                conv.convert_segvit({k: v for k, v in official.items() if k != key})
        head = 'decode_head.atm.' if 'shrunk' in name else 'decode_head.'
        for key in (head + 'decoder_1.layers.2.multihead_attn.k.bias', head + 'q.weight',
                    head + 'class_embed.bias'):
            with pytest.raises(KeyError, match=re.escape(key)):
                conv.convert_segvit({k: v for k, v in official.items() if k != key})
        with pytest.raises(KeyError, match='not in the official'):
            conv.convert_segvit({**official, 'decode_head.foo.weight': torch.zeros(1)})
    # the Shrunk QU part (TPNATMHead's own decoders and projections) too
    official = {k: torch.empty(v, device='meta')
                for k, v in official_keys('segvit-shrunk_vit-l_ade').items()}
    for key in ('decode_head.decoder_2.layers.0.norm3.weight', 'decode_head.proj_norm_1.bias',
                'decode_head.q.weight'):
        with pytest.raises(KeyError, match=re.escape(key)):
            conv.convert_segvit({k: v for k, v in official.items() if k != key})
    # the CLI: exit 1, the key named, nothing written
    src, dst = tmp_path / 'no_bias.pth', tmp_path / 'never.pth'
    torch.save({k: v for k, v in _indexed_official('segvit_vit-l_ade').items()
                if k != 'backbone.patch_embed.projection.bias'}, src)
    assert conv.main([str(src), str(dst)]) == 1
    err = capsys.readouterr().err
    assert err.startswith('error:') and 'backbone.patch_embed.projection.bias' in err
    assert not dst.exists()
    assert conv.main([str(tmp_path / 'nope.pth'), str(dst)]) == 1
    assert 'nope.pth' in capsys.readouterr().err and not dst.exists()


def test_converted_checkpoint_with_a_wrong_shape_is_named():
    """A shape the converter cannot know (e.g. another class count) is named by the checked
    load, with both shapes."""
    from mmseg_ovseg.utils.strict_load import compare_state_dict
    official = {k: torch.empty(v, device='meta')
                for k, v in official_keys('segvit_vit-l_ade').items()}
    official['decode_head.class_embed.weight'] = torch.empty(172, 512, device='meta')
    converted = _converter().convert_segvit(official)
    with torch.device('meta'):
        head = MODELS.build(Config.fromfile(SEGVIT_CFG).model.decode_head)
    head_state = {k[len('decode_head.'):]: v for k, v in converted.items()
                  if k.startswith('decode_head.')}
    mismatch = compare_state_dict(head, head_state)
    assert not mismatch.missing and not mismatch.unexpected
    assert mismatch.mismatched == [('class_embed.weight', (172, 512), (151, 512))]
    assert 'class_embed.weight: checkpoint (172, 512) vs model (151, 512)' in \
        mismatch.describe()


SEGVIT_CONFIGS = sorted(glob.glob(osp.join(ROOT, 'configs', 'segvit*.py')))


@pytest.mark.slow
def test_every_segvit_config_builds_the_official_patch_bias():
    names = [osp.basename(p) for p in SEGVIT_CONFIGS]
    assert {'segvit_tiny_synthetic.py', 'segvit-shrunk_tiny_synthetic.py',
            'segvit_vit-l16_ade20k-640x640.py', 'segvit-shrunk_vit-l16_ade20k-640x640.py'} <= \
        set(names)
    for path in SEGVIT_CONFIGS:
        _check_patch_bias(path)


def _check_patch_bias(path):
    bb = Config.fromfile(path).model.backbone
    assert bb.patch_bias is True, path
    assert bb.type in ('StrictVisionTransformer', 'ShrunkVisionTransformer'), path


# ---------------------------------------------------------------- checked pretrained loading
def _save(tmp_path, state, name='ckpt.pth', wrap=True):
    path = tmp_path / name
    torch.save(dict(state_dict=state, meta=dict()) if wrap else state, path)
    return str(path)


def _mmseg_vit_state(**kw):
    vit = VisionTransformer(**{**VIT, **kw})
    vit.init_weights()
    return vit.state_dict()


def _strict_vit(path, cls=StrictVisionTransformer, **init):
    extra = dict(shrink_idx=2) if cls is ShrunkVisionTransformer else {}
    return cls(**VIT, **extra, init_cfg=dict(type='Pretrained', checkpoint=path, **init))


def test_pretrained_load_without_patch_bias_is_an_error_naming_it(tmp_path, capsys):
    path = _save(tmp_path, _mmseg_vit_state(patch_bias=False))
    for cls in (StrictVisionTransformer, ShrunkVisionTransformer):
        model = _strict_vit(path, cls)
        before = model.state_dict()['layers.0.ln1.weight'].clone()
        with pytest.raises(StateDictMismatchError,
                           match=r'missing keys \(1\): patch_embed\.projection\.bias'):
            model.init_weights()
        assert torch.equal(model.state_dict()['layers.0.ln1.weight'], before)  # untouched
    # (mmseg's own VisionTransformer drops the key with a print only: what this guards against)
    VisionTransformer(**VIT, init_cfg=dict(type='Pretrained', checkpoint=path)).init_weights()
    assert 'patch_embed.projection.bias' in capsys.readouterr().out
    # opt-out: a warning that names the key; everything else is loaded
    model = _strict_vit(path, on_mismatch='warn')
    with pytest.warns(UserWarning, match=r'patch_embed\.projection\.bias'):
        model.init_weights()
    src = torch.load(path, weights_only=True)['state_dict']
    for key, value in model.state_dict().items():
        if key != 'patch_embed.projection.bias':
            assert torch.equal(value, src[key]), key


def test_pretrained_load_extra_and_misshaped_keys_are_named(tmp_path):
    good = _mmseg_vit_state()
    # an extra key
    path = _save(tmp_path, {**good, 'head.weight': torch.zeros(3)}, 'extra.pth')
    with pytest.raises(StateDictMismatchError, match=r'unexpected .*\(1\): head\.weight'):
        _strict_vit(path).init_weights()
    model = _strict_vit(path, ignore_unexpected=['head.'])  # named as known: loads
    model.init_weights()
    assert torch.equal(model.state_dict()['layers.3.ffn.layers.1.weight'],
                       good['layers.3.ffn.layers.1.weight'])
    # Segmenter-style checkpoint with a final norm into a model without one
    path = _save(tmp_path, _mmseg_vit_state(final_norm=True), 'final_norm.pth')
    with pytest.raises(StateDictMismatchError, match=r'ln1\.weight, ln1\.bias'):
        _strict_vit(path).init_weights()
    _strict_vit(path, ignore_unexpected=['ln1.']).init_weights()
    # a wrong shape (a checkpoint with mlp_ratio 4)
    path = _save(tmp_path, _mmseg_vit_state(mlp_ratio=4), 'mlp4.pth')
    with pytest.raises(StateDictMismatchError,
                       match=re.escape('layers.0.ffn.layers.0.0.weight: checkpoint (128, 32) '
                                       'vs model (64, 32)')):
        _strict_vit(path).init_weights()
    with pytest.raises(KeyError, match='strict'):
        _strict_vit(path, strict=True)  # unknown init_cfg key
    with pytest.raises(ValueError, match='on_mismatch'):
        _strict_vit(path, on_mismatch='ignore')


def test_pretrained_load_resizes_positions_as_mmseg_and_takes_a_prefix(tmp_path):
    """A checkpoint at another grid (4 x 4 -> 8 x 8, bicubic): the loaded state equals what
    mmseg's own VisionTransformer.init_weights loads from it."""
    src = _mmseg_vit_state(img_size=(32, 32))
    src['pos_embed'] = torch.randn_like(src['pos_embed'])
    path = _save(tmp_path, src)
    ref = VisionTransformer(**VIT, init_cfg=dict(type='Pretrained', checkpoint=path))
    ref.init_weights()
    model = _strict_vit(path)
    model.init_weights()
    assert model.pos_embed.shape == (1, 65, 32)
    for key, value in ref.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    # a whole-segmentor checkpoint: backbone keys under a prefix
    path = _save(tmp_path, {**{f'backbone.{k}': v for k, v in src.items()},
                            'decode_head.q.weight': torch.zeros(2)}, 'segmentor.pth')
    model = _strict_vit(path, prefix='backbone.')
    model.init_weights()
    torch.testing.assert_close(model.pos_embed, ref.pos_embed)
    with pytest.raises(KeyError, match="no keys under prefix 'neck.'"):
        _strict_vit(path, prefix='neck.').init_weights()
