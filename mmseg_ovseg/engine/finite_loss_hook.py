"""``FiniteLossHook``: stop training on a NaN/inf loss (or gradient norm), naming the iteration
and the loss terms.

On by default in every shipped config (``default_hooks.check_finite_loss`` in
``configs/_base_/default_runtime.py``); switch it to a warning with
``--cfg-options default_hooks.check_finite_loss.action=warn`` or off with
``default_hooks.check_finite_loss=None``.
"""
import logging
import math

import torch
from mmengine.dist import all_reduce, get_world_size
from mmengine.hooks import Hook
from mmseg.registry import HOOKS

__all__ = ['FiniteLossHook', 'NonFiniteLossError']


class NonFiniteLossError(FloatingPointError):
    """A training loss became NaN or infinite."""


@HOOKS.register_module()
class FiniteLossHook(Hook):
    """Check the losses returned by ``train_step`` every ``interval`` iterations, and the
    gradient norm of the step when the optimizer wrapper clips gradients (``clip_grad``) and so
    logs ``grad_norm``: a finite loss with a NaN/inf gradient norm leaves NaN weights.

    It runs after the optimizer step but before the checkpoint hook of the same iteration, so
    with ``action='raise'`` no checkpoint with the (possibly NaN) weights is written; the last
    checkpoint is the one to resume from, e.g. with a lower learning rate.

    Args:
        action (str): ``'raise'`` (stop with :class:`NonFiniteLossError`) or ``'warn'`` (log a
            warning and continue). Defaults to ``'raise'``.
        interval (int): check every ``interval`` iterations. Defaults to 1.
        keys (str): substring selecting the checked entries of the outputs: mmengine sums the
            entries whose name contains ``'loss'`` into the optimised loss. Defaults to
            ``'loss'``.
    """

    priority = 'ABOVE_NORMAL'  # before LoggerHook and CheckpointHook

    def __init__(self, action: str = 'raise', interval: int = 1, keys: str = 'loss'):
        if action not in ('raise', 'warn'):
            raise ValueError(f"FiniteLossHook: action must be 'raise' or 'warn', got {action!r}")
        if not isinstance(interval, int) or interval < 1:
            raise ValueError(f'FiniteLossHook: interval must be an integer >= 1, got {interval!r}')
        self.action = action
        self.interval = interval
        self.keys = keys

    def before_train_iter(self, runner, batch_idx, data_batch=None) -> None:
        self._grad_norm_count = self._grad_norm_updates(runner)

    @staticmethod
    def _grad_norm_updates(runner):
        scalars = runner.message_hub.log_scalars
        buf = scalars.get('train/grad_norm')
        return None if buf is None else (len(buf.data[0]), buf.data[0][-1:].tolist())

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        if not outputs or not self.every_n_train_iters(runner, self.interval):
            return
        values = {}
        for name, value in outputs.items():
            if self.keys in name:
                if isinstance(value, torch.Tensor):
                    value = value.detach().float().mean().item() if value.numel() else 0.0
                try:
                    values[name] = float(value)
                except (TypeError, ValueError):
                    continue
        # the gradient norm logged by this iteration's optimizer step (clip_grad)
        now = self._grad_norm_updates(runner)
        if now is not None and now != getattr(self, '_grad_norm_count', None) and now[1]:
            values['grad_norm'] = float(now[1][0])
        bad = {k: v for k, v in values.items() if not math.isfinite(v)}
        if get_world_size() > 1:  # all ranks stop together, whichever saw the bad loss
            flag = torch.tensor([float(len(bad))])
            all_reduce(flag)
            if flag.item() > 0 and not bad:
                bad = {'(another rank)': float('nan')}
        if not bad:
            return
        terms = ', '.join(f'{k}={v}' for k, v in bad.items())
        finite = ', '.join(f'{k}={v:.4g}' for k, v in values.items() if k not in bad)
        last = runner.message_hub.get_info('last_ckpt')
        what = ('loss' if set(bad) - {'grad_norm'} else
                'gradient norm (the weights after this step are not finite)')
        msg = (f'non-finite {what} at iteration {runner.iter + 1}: {terms}'
               + (f' (finite: {finite})' if finite else '')
               + (f'; last checkpoint: {last}' if last else '; no checkpoint saved yet'))
        if self.action == 'raise':
            raise NonFiniteLossError(
                msg + '. Lower the learning rate or check the data; set '
                'default_hooks.check_finite_loss.action=warn to train on.')
        runner.logger.log(logging.WARNING, msg)
