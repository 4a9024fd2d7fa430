"""tools/misc/publish_model.py on a checkpoint in the format mmengine's Runner writes
(state_dict, meta with numpy values, optimizer, param_schedulers, message_hub with
HistoryBuffer objects)."""
import os
import os.path as osp
import re

import numpy as np
import pytest
import torch
from mmengine.logging import MessageHub

from tool_loader import load_tool

publish = load_tool('misc/publish_model')


def _runner_like_checkpoint(path):
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    optim = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(2, 3, 8, 8)).sum().backward()
    optim.step()
    hub = MessageHub.get_instance('publish_model_test')
    hub.update_scalar('train/loss', 0.5)
    hub.update_scalar('train/loss', 0.25)
    ckpt = dict(
        meta=dict(epoch=0, iter=2, seed=np.int64(3), mmengine_version='0.10.7',
                  dataset_meta=dict(classes=('cat', 'dog'))),
        state_dict=model.state_dict(), optimizer=optim.state_dict(),
        param_schedulers=[dict(last_step=2)], message_hub=hub.state_dict())
    torch.save(ckpt, path)
    return ckpt


def test_publish_strips_training_state_and_names_by_hash(tmp_path, capsys):
    src = str(tmp_path / 'iter_2.pth')
    ckpt = _runner_like_checkpoint(src)
    # the input needs the allow-list (plain weights-only loading refuses HistoryBuffer)
    out_dir = tmp_path / 'release'
    assert publish.main([src, str(out_dir / 'san_tiny.pth')]) == 0
    files = os.listdir(out_dir)
    assert len(files) == 1 and not files[0].startswith('.'), files  # no temporary left
    final = str(out_dir / files[0])
    assert final in capsys.readouterr().out
    # torch.hub's convention: the name carries the first hex digits of the file's sha256
    prefix = torch.hub.HASH_REGEX.search(osp.basename(final)).group(1)
    assert re.fullmatch(r'san_tiny-[0-9a-f]{8}\.pth', osp.basename(final))
    assert publish.sha256sum(final).startswith(prefix)
    # plain weights-only loading works on the published file: no HistoryBuffer left
    out = torch.load(final, map_location='cpu', weights_only=True)
    assert set(out) == {'meta', 'state_dict'}
    assert out['meta']['dataset_meta'] == ckpt['meta']['dataset_meta']
    for k, v in ckpt['state_dict'].items():
        assert torch.equal(out['state_dict'][k], v)
    assert osp.getsize(final) < osp.getsize(src)


def test_publish_bad_input(tmp_path, capsys):
    assert publish.main([str(tmp_path / 'missing.pth'), str(tmp_path / 'o.pth')]) == 1
    assert 'checkpoint not found' in capsys.readouterr().err
    bad = str(tmp_path / 'bad.pth')
    torch.save(dict(model_weights=[1, 2]), bad)
    assert publish.main([bad, str(tmp_path / 'o.pth')]) == 1
    assert "no \"state_dict\" in the checkpoint (keys: ['model_weights'])" in \
        capsys.readouterr().err
    assert not [f for f in os.listdir(tmp_path) if f.startswith('o')]
    # a bare state dict is published as {'state_dict': ...}
    bare = str(tmp_path / 'bare.pth')
    torch.save(dict(w=torch.ones(2)), bare)
    assert publish.main([bare, str(tmp_path / 'bare_out')]) == 0
    (name, ) = [f for f in os.listdir(tmp_path) if f.startswith('bare_out-')]
    assert torch.load(str(tmp_path / name), weights_only=True)['state_dict']['w'].sum() == 2


@pytest.mark.slow
def test_browse_dataset(tmp_path, capsys):
    """tools/misc/browse_dataset.py (mmseg 1.2.2's stops at OpenCV 5 on a non-contiguous
    image): draws the val samples of the tiny synthetic config with their ground truth; a
    missing dataset is named."""
    from PIL import Image

    from mmseg_ovseg.datasets.synthetic import generate_synthetic_dataset
    browse = load_tool('misc/browse_dataset')
    cfg = osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), 'configs',
                   'san_tiny_synthetic.py')
    root = str(tmp_path / 'synthetic')
    opts = ['--cfg-options', f'val_dataloader.dataset.data_root={root}']
    assert browse.main([cfg, '--output-dir', str(tmp_path / 'o'), '--split', 'val'] + opts) == 1
    assert f'data_root {root} not found' in capsys.readouterr().err
    generate_synthetic_dataset(root, num_train=1, num_val=2, seed=0, size=64)
    assert browse.main([cfg, '--output-dir', str(tmp_path / 'o'), '--split', 'val'] + opts) == 0
    files = sorted(os.listdir(tmp_path / 'o'))
    assert len(files) == 2
    drawn = np.asarray(Image.open(tmp_path / 'o' / files[0]).convert('RGB'))
    raw = np.asarray(Image.open(osp.join(root, 'img_dir', 'val', files[0])).convert('RGB'))
    # drawn at the labels' size (the val pipeline loads them after its 64 -> 128 resize),
    # with the ground-truth colours over the image
    assert drawn.shape == raw.shape == (64, 64, 3)
    assert np.abs(drawn.astype(int) - raw.astype(int)).mean() > 5
