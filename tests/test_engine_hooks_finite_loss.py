"""FiniteLossHook on the toy model of test_engine_hooks.py (NaN/inf loss, NaN gradient norm, a
huge learning rate, warn mode, arguments), and every shipped config using SafeCheckpointHook and
FiniteLossHook (split from test_engine_hooks.py; tests unchanged)."""
import glob
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.hooks import Hook
from mmseg.registry import HOOKS

from mmseg_ovseg.engine import FiniteLossHook, NonFiniteLossError, SafeCheckpointHook
from test_engine_hooks import REPO, make_runner

# --- non-finite loss ---------------------------------------------------------------------


class NaNAt(Hook):
    """Makes the loss of one iteration NaN (a patched loss)."""

    def __init__(self, iteration, value=float('nan')):
        self.iteration, self.value = iteration, value

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        if runner.iter + 1 == self.iteration:
            data_batch['labels'][0] = self.value


@pytest.mark.parametrize('value', [float('nan'), float('inf')])
def test_non_finite_loss_stops_training(tmp_path, value):
    finite = dict(type='FiniteLossHook')
    runner = make_runner(tmp_path, interval=1, finite=finite, extra_hooks=[NaNAt(3, value)])
    with pytest.raises(NonFiniteLossError, match=r'iteration 3: loss=(nan|inf)') as err:
        runner.train()
    assert 'last checkpoint: ' + str(tmp_path / 'iter_2.pth') in str(err.value)
    # raised before the checkpoint hook: the weights after the bad step are not saved
    assert not (tmp_path / 'iter_3.pth').exists()
    assert (tmp_path / 'last_checkpoint').read_text().endswith('iter_2.pth')


class NaNGradientAt(Hook):
    """A finite loss whose gradient is NaN at one iteration."""

    def __init__(self, iteration):
        self.iteration, self.handle = iteration, None

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        if runner.iter + 1 == self.iteration:
            self.handle = runner.model.linear.weight.register_hook(lambda g: g * float('nan'))

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        if self.handle is not None:
            self.handle.remove()
            self.handle = None


def test_non_finite_gradient_norm_stops_training(tmp_path):
    runner = make_runner(tmp_path, interval=1, finite=dict(type='FiniteLossHook'),
                         clip_grad=dict(max_norm=1.0), extra_hooks=[NaNGradientAt(3)])
    with pytest.raises(NonFiniteLossError,
                       match=r'non-finite gradient norm .* at iteration 3: grad_norm=nan '
                       r'\(finite: loss=') as err:
        runner.train()
    assert not torch.isfinite(runner.model.linear.weight).all()  # why it must stop
    assert 'last checkpoint: ' + str(tmp_path / 'iter_2.pth') in str(err.value)
    assert not (tmp_path / 'iter_3.pth').exists()
    # without clip_grad there is no gradient norm to check; with it and finite gradients, no
    # false alarm
    make_runner(tmp_path / 'ok', finite=dict(type='FiniteLossHook'),
                clip_grad=dict(max_norm=1.0)).train()


def test_non_finite_loss_huge_learning_rate(tmp_path):
    runner = make_runner(tmp_path, max_iters=200, interval=1000, optimizer='SGD', lr=1e6,
                         finite=dict(type='FiniteLossHook'))
    with pytest.raises(NonFiniteLossError, match=r'non-finite loss at iteration \d+: loss='):
        runner.train()
    assert runner.iter < 199


def test_non_finite_loss_warn(tmp_path, warnings_log):
    runner = make_runner(tmp_path, max_iters=4, finite=dict(type='FiniteLossHook',
                                                            action='warn'),
                         extra_hooks=[NaNAt(2)])
    warnings_log.attach()
    runner.train()
    assert runner.iter == 4
    assert any('non-finite loss at iteration 2: loss=nan' in m for m in warnings_log)


def test_finite_loss_hook_arguments():
    with pytest.raises(ValueError, match="action must be 'raise' or 'warn'"):
        FiniteLossHook(action='skip')
    with pytest.raises(ValueError, match='interval'):
        FiniteLossHook(interval=0)


# --- every shipped config uses the hooks -------------------------------------------------

CONFIGS = sorted(glob.glob(osp.join(REPO, 'configs', '*.py')))


def test_configs_found():
    assert len(CONFIGS) >= 20


@pytest.mark.parametrize('config', CONFIGS, ids=[osp.basename(c) for c in CONFIGS])
@pytest.mark.slow
def test_config_uses_safe_checkpoint_and_finite_loss(config):
    cfg = Config.fromfile(config)
    hooks = cfg.default_hooks
    assert hooks.checkpoint.type == 'SafeCheckpointHook', hooks.checkpoint
    assert hooks.check_finite_loss.type == 'FiniteLossHook'
    assert hooks.check_finite_loss.action == 'raise'
    assert isinstance(HOOKS.build(dict(hooks.checkpoint)), SafeCheckpointHook)
    assert isinstance(HOOKS.build(dict(hooks.check_finite_loss)), FiniteLossHook)
