"""The converters' shared command line (``mmseg_ovseg/utils/converter_cli.py``): ``--config``
builds the model and loads the converted state strictly, listing every key that does not fit
and writing nothing then; DST is written atomically.

The checkpoint used is the official SAN ViT-B/16 release layout recorded in
``tests/fixtures/official/san_vit-b16_official.json`` (values irrelevant here), converted by
``tools/model_converters/san2ovseg.py`` and checked against ``configs/san_vitb16_coco-stuff.py``.
"""
import os
import os.path as osp
import re

import pytest
import torch
import torch.nn as nn

from mmseg_ovseg.utils import converter_cli
from mmseg_ovseg.utils.converter_cli import state_dict_mismatch
from official_fixtures import official_keys
from tool_loader import load_tool

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
SAN_B16 = osp.join(ROOT, 'configs', 'san_vitb16_coco-stuff.py')


@pytest.fixture(scope='module')
def official():
    """The official layout at full size; values do not matter here (zeros)."""
    return {k: torch.zeros(shape) for k, shape in official_keys('san_vit-b16_official').items()}


@pytest.fixture(scope='module')
def official_names():
    """The official key names with one-element tensors (the converter only renames)."""
    return {k: torch.zeros(1) for k in official_keys('san_vit-b16_official')}


def test_state_dict_mismatch_lists_every_kind():
    model = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4))
    good = {k: v.clone() for k, v in model.state_dict().items()}
    assert state_dict_mismatch(model, good) is None
    bad = dict(good)
    bad.pop('1.bias')
    bad['0.weight'] = torch.zeros(4, 5)
    bad['2.weight'] = torch.zeros(1)
    msg = state_dict_mismatch(model, bad)
    assert msg.startswith('1 missing, 1 unexpected, 1 with the wrong shape')
    assert 'missing keys (1): 1.bias' in msg and 'unexpected keys (1): 2.weight' in msg
    assert '0.weight: checkpoint (4, 5) vs model (4, 3)' in msg


def test_without_pretrained_switches_off_every_weight_file():
    cfg = dict(backbone=dict(pretrained='clip.pt', init_cfg=dict(type='Pretrained',
                                                                  checkpoint='x.pth')),
               text_encoder=dict(pretrained='clip.pt'),
               heads=[dict(init_cfg=dict(type='Normal', std=0.01), pretrained=None)])
    converter_cli._without_pretrained(cfg)
    assert cfg['backbone'] == dict(pretrained=None, init_cfg=None)
    assert cfg['text_encoder']['pretrained'] is None
    assert cfg['heads'][0]['init_cfg'] == dict(type='Normal', std=0.01)  # not a file: kept


@pytest.mark.slow
def test_config_option_accepts_a_fitting_checkpoint(official, tmp_path, capsys):
    tool = load_tool('model_converters/san2ovseg')
    src, dst = tmp_path / 'official.pth', tmp_path / 'san.pth'
    torch.save(dict(model=official), src)
    assert tool.main([str(src), str(dst), '--config', SAN_B16]) == 0
    out = capsys.readouterr().out
    assert f'loads strictly into {SAN_B16}' in out and 'fusion_index=(0, 1, 2, 3)' in out
    assert set(torch.load(dst, weights_only=True, mmap=True)['state_dict']) == \
        set(tool.convert(official)[0])


@pytest.mark.slow
def test_config_option_refuses_a_checkpoint_that_does_not_fit(official, tmp_path, capsys):
    """Keys the converter accepts but the config's model does not: one error lists the
    missing, unexpected and mis-shaped keys, exit status 1, DST not written (and an existing
    DST left as it was)."""
    tool = load_tool('model_converters/san2ovseg')
    state = {k: v for k, v in official.items()
             if not k.startswith('clip_rec_head.resblocks.2.')}  # CLIP block 11 missing
    for k, v in list(official.items()):  # a 9th side-adapter block: unexpected
        if k.startswith('side_adapter_network.vit_model.blocks.7.'):
            state[k.replace('blocks.7.', 'blocks.8.')] = v.clone()
    state['side_adapter_network.vit_model.pos_embed'] = torch.zeros(1, 32 * 32, 240)
    src, dst = tmp_path / 'official.pth', tmp_path / 'san.pth'
    torch.save(dict(model=state), src)
    dst.write_bytes(b'previous file')
    assert tool.main([str(src), str(dst), '--config', SAN_B16]) == 1
    err = capsys.readouterr().err
    assert err.startswith('error: the converted checkpoint does not fit')
    assert '12 missing, 12 unexpected, 1 with the wrong shape' in err
    assert 'backbone.visual.transformer.resblocks.11.attn.in_proj_weight' in err
    assert 'decode_head.side_adapter.blocks.8.mlp.fc2.bias' in err
    assert ('decode_head.side_adapter.pos_embed: checkpoint (1, 1024, 240) vs model '
            '(1, 1600, 240)') in err
    assert dst.read_bytes() == b'previous file'
    assert sorted(os.listdir(tmp_path)) == ['official.pth', 'san.pth']  # no temp file left
    # a config that does not exist is a clear error too
    assert tool.main([str(src), str(tmp_path / 'x.pth'), '--config', 'nope.py']) == 1
    assert 'config not found: nope.py' in capsys.readouterr().err


def test_output_is_written_atomically(official_names, tmp_path, monkeypatch, capsys):
    """A save that fails half-way leaves neither a partial DST nor a temporary file, and the
    error is one line with exit status 1."""
    tool = load_tool('model_converters/san2ovseg')
    src, dst = tmp_path / 'official.pth', tmp_path / 'san.pth'
    torch.save(dict(model=official_names), src)
    real_save = torch.save

    def failing_save(obj, f, *args, **kwargs):
        f.write(b'half a checkpoint')
        raise OSError('disk full')

    monkeypatch.setattr(torch, 'save', failing_save)
    capsys.readouterr()
    assert tool.main([str(src), str(dst)]) == 1
    assert capsys.readouterr().err.strip().startswith('error: OSError: disk full')
    monkeypatch.setattr(torch, 'save', real_save)
    assert sorted(os.listdir(tmp_path)) == ['official.pth']
    assert not any(re.match(r'\.tmp_', n) for n in os.listdir(tmp_path))
