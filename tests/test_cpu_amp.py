"""CPU mixed precision: CPUAmpOptimWrapper and train.py --amp on a CPU-only machine."""
import os.path as osp

import pytest
import torch
import torch.nn as nn
from mmengine.config import Config
from mmseg.registry import OPTIM_WRAPPERS

from test_tools import (  # noqa: F401
    CONFIG,
    PY,
    data_root,  # noqa: F401  (fixture)
    load_tool,
    run,
    short_options,
)


def test_wrapper_autocasts_forward_and_steps():
    model = nn.Linear(4, 3)
    wrapper = OPTIM_WRAPPERS.build(
        dict(type='CPUAmpOptimWrapper', loss_scale='dynamic',
             optimizer=torch.optim.SGD(model.parameters(), lr=0.1)))
    before = model.weight.detach().clone()
    with wrapper.optim_context(model):
        out = model(torch.randn(2, 4))
    assert out.dtype == torch.bfloat16
    wrapper.update_params(out.float().pow(2).mean())
    assert model.weight.dtype == torch.float32
    assert not torch.equal(model.weight, before)
    with pytest.raises(ValueError, match='dtype'):
        OPTIM_WRAPPERS.build(dict(type='CPUAmpOptimWrapper', dtype='int8',
                                  optimizer=torch.optim.SGD(model.parameters(), lr=0.1)))


@pytest.mark.skipif(torch.cuda.is_available(), reason='checks the CPU fallback')
def test_amp_configs_fall_back_to_bf16_on_cpu():
    train = load_tool('train')
    cfg = Config(dict(optim_wrapper=dict(type='OptimWrapper', optimizer=dict(type='SGD'))))
    train.enable_amp(cfg)
    train.adapt_amp_to_device(cfg)
    assert cfg.optim_wrapper.type == 'CPUAmpOptimWrapper'
    san = Config.fromfile(osp.join(osp.dirname(CONFIG), 'san_vitb16_coco-stuff.py'))
    assert san.optim_wrapper.type == 'AmpOptimWrapper'
    train.adapt_amp_to_device(san)
    assert san.optim_wrapper.type == 'CPUAmpOptimWrapper'


@pytest.mark.slow
def test_train_py_amp_runs_on_cpu(data_root, tmp_path):  # noqa: F811
    proc, out = run([PY, 'tools/train.py', CONFIG, '--amp', '--work-dir', str(tmp_path),
                     '--cfg-options'] + short_options(data_root))
    assert proc.returncode == 0, out[-3000:]
    assert 'CPUAmpOptimWrapper' in out
    assert osp.isfile(tmp_path / 'iter_2.pth')
