"""SafeCheckpointHook and the resume helpers (mmseg_ovseg/engine), on a toy model trained with
mmengine's real Runner (seconds on CPU): exact resume, kill-proof saving, best checkpoints.

Broken-checkpoint fallback at resume is tested in tests/test_engine_hooks_resume.py, FiniteLossHook
and the shipped configs in tests/test_engine_hooks_finite_loss.py (both use the toy Runner here),
the kill -9 tests with the tiny SAN / ZegCLIP configs in tests/test_resume.py.
"""
import glob
import os
import os.path as osp
import uuid

import numpy as np
import pytest
import torch
import torch.nn as nn
from mmengine.evaluator import BaseMetric, Evaluator
from mmengine.fileio.backends import LocalBackend
from mmengine.hooks import CheckpointHook, Hook
from mmengine.model import BaseModel
from mmengine.runner import Runner
from torch.utils.data import Dataset

from mmseg_ovseg.engine import (
    SafeCheckpointHook,
    check_checkpoint,
)
from mmseg_ovseg.engine.resume import capture_rng_state, restore_rng_state

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))


class NoisyToy(BaseModel):
    """Uses the global torch RNG in training like the real models (dropout, point sampling)."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(4, 1)
        self.drop = nn.Dropout(0.5)

    def forward(self, inputs, labels=None, mode='tensor'):
        out = self.linear(self.drop(inputs)).squeeze(-1)
        if mode == 'loss':
            noise = torch.rand_like(out)  # like the random points of the mask losses
            return dict(loss=((out - labels)**2 * (0.5 + noise)).mean())
        return out


class NoisyData(Dataset):
    """Random augmentation from numpy's and Python's global generators, as mmcv transforms
    do in the main process (num_workers=0)."""

    def __len__(self):
        return 16

    def __getitem__(self, i):
        import random
        g = torch.Generator().manual_seed(i)
        x = torch.randn(4, generator=g) * float(np.random.uniform(0.5, 1.5))
        if random.random() < 0.5:
            x = x.flip(0)
        return dict(inputs=x, labels=torch.tensor(float(i % 3)))


class Record(Hook):
    """Per-iteration losses; raises after iteration ``crash_after`` (an in-process kill)."""
    priority = 'HIGHEST'

    def __init__(self, crash_after=None):
        self.losses = {}
        self.crash_after = crash_after

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        self.losses[runner.iter + 1] = outputs['loss'].item()
        if runner.iter + 1 == self.crash_after:
            raise KeyboardInterrupt('simulated kill')


class CountMetric(BaseMetric):
    """Stand-in evaluator: validation must run (it draws from torch's RNG when it creates its
    data iterator)."""

    def process(self, data_batch, data_samples):
        self.results.append(0.0)

    def compute_metrics(self, results):
        return dict(score=float(len(results)))


def make_runner(work_dir, max_iters=8, hook_cls=SafeCheckpointHook, interval=2, record=None,
                resume=False, val_interval=1000, max_keep_ckpts=1, extra_hooks=(), lr=0.05,
                optimizer='AdamW', finite=None, clip_grad=None):
    hooks = dict(checkpoint=hook_cls(interval=interval, by_epoch=False,
                                     max_keep_ckpts=max_keep_ckpts),
                 logger=dict(type='LoggerHook', interval=1))
    if finite is not None:
        hooks['check_finite_loss'] = finite
    val = dict(val_dataloader=dict(dataset=NoisyData(), sampler=dict(type='DefaultSampler',
                                                                     shuffle=False),
                                   batch_size=4, num_workers=0,
                                   collate_fn=dict(type='default_collate')),
               val_cfg=dict(), val_evaluator=Evaluator([CountMetric()]))
    torch.manual_seed(0)  # the toy is built before the Runner seeds
    return Runner(
        model=NoisyToy(),
        work_dir=str(work_dir),
        experiment_name=f'toy_{uuid.uuid4().hex[:8]}',
        train_dataloader=dict(dataset=NoisyData(), sampler=dict(type='InfiniteSampler',
                                                                shuffle=True),
                              batch_size=2, num_workers=0,
                              collate_fn=dict(type='default_collate')),
        optim_wrapper=dict(optimizer=dict(type=optimizer, lr=lr), clip_grad=clip_grad),
        param_scheduler=dict(type='MultiStepLR', milestones=[3], by_epoch=False),
        train_cfg=dict(by_epoch=False, max_iters=max_iters, val_interval=val_interval),
        default_hooks=hooks,
        custom_hooks=[h for h in [record, *extra_hooks] if h is not None],
        resume=resume,
        randomness=dict(seed=0),
        default_scope='mmseg',
        **val)


def final_state(work_dir, max_iters=8):
    return torch.load(osp.join(work_dir, f'iter_{max_iters}.pth'), weights_only=True)


# --- exact resume ------------------------------------------------------------------------


def _interrupted_curve(tmp_path, crash_after, hook_cls=SafeCheckpointHook, **kwargs):
    first = Record(crash_after=crash_after)
    with pytest.raises(KeyboardInterrupt):
        make_runner(tmp_path, hook_cls=hook_cls, record=first, **kwargs).train()
    second = Record()
    make_runner(tmp_path, hook_cls=hook_cls, record=second, resume=True, **kwargs).train()
    return first.losses, second.losses


@pytest.mark.parametrize('crash_after', [3, 5, 8])
def test_resume_repeats_uninterrupted_run(tmp_path, crash_after):
    ref = Record()
    make_runner(tmp_path / 'ref', record=ref).train()
    # two runs of the same seed agree (so a difference below comes from the resume)
    again = Record()
    make_runner(tmp_path / 'again', record=again).train()
    assert again.losses == ref.losses

    first, second = _interrupted_curve(tmp_path / 'run', crash_after)
    # the kill comes before the checkpoint hook of its iteration
    last_ckpt = (crash_after - 1) // 2 * 2
    assert sorted(second) == list(range(last_ckpt + 1, 9))
    for it, loss in {**first, **second}.items():
        assert loss == ref.losses[it], f'iteration {it}: {loss} != {ref.losses[it]}'
    a, b = final_state(tmp_path / 'ref'), final_state(tmp_path / 'run')
    for k in a['state_dict']:
        assert torch.equal(a['state_dict'][k], b['state_dict'][k]), k


def test_resume_with_validation_at_the_checkpoint(tmp_path):
    """The checkpoint of iteration 4 is written before that iteration's validation, which the
    resumed run does not repeat: validation must not move the training random streams."""
    ref = Record()
    make_runner(tmp_path / 'ref', record=ref, interval=4, val_interval=4).train()
    first, second = _interrupted_curve(tmp_path / 'run', 6, interval=4, val_interval=4)
    assert {**first, **second} == ref.losses


def test_mmengine_hook_does_not_resume_exactly(tmp_path):
    """Guards the test above: with mmengine's CheckpointHook the curves differ after resume
    (the random states are not restored)."""
    ref = Record()
    make_runner(tmp_path / 'ref', hook_cls=CheckpointHook, record=ref).train()
    _, second = _interrupted_curve(tmp_path / 'run', 5, hook_cls=CheckpointHook)
    assert any(second[it] != ref.losses[it] for it in second)


def test_rng_state_round_trip(tmp_path):
    import random
    torch.manual_seed(3)
    np.random.seed(3)
    random.seed(3)
    state = capture_rng_state()
    torch.save(state, tmp_path / 's.pth')  # loads under weights_only
    state = torch.load(tmp_path / 's.pth', weights_only=True)
    a = (torch.rand(3), np.random.rand(3), np.random.randn(), random.random())
    restore_rng_state(state)
    b = (torch.rand(3), np.random.rand(3), np.random.randn(), random.random())
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2:] == b[2:]


# --- kill-proof saving -------------------------------------------------------------------


def test_failed_save_keeps_previous_checkpoint(tmp_path, monkeypatch):
    """A save that dies midway (here: disk full after half the bytes) leaves the previous
    checkpoint, a last_checkpoint naming it, and no partial file; resume then works."""
    put = LocalBackend.put

    def failing_put(self, obj, filepath):
        if 'iter_4.pth' in str(filepath):
            with open(filepath, 'wb') as f:
                f.write(obj[:len(obj) // 2])
            raise OSError(28, 'No space left on device')
        return put(self, obj, filepath)

    monkeypatch.setattr(LocalBackend, 'put', failing_put)
    with pytest.raises(OSError, match='No space left'):
        make_runner(tmp_path, max_keep_ckpts=1).train()
    assert sorted(glob.glob(str(tmp_path / '*.pth'))) == [str(tmp_path / 'iter_2.pth')]
    assert glob.glob(str(tmp_path / '.*')) == []  # the partial temporary file is gone
    assert (tmp_path / 'last_checkpoint').read_text() == str(tmp_path / 'iter_2.pth')
    assert check_checkpoint(str(tmp_path / 'iter_2.pth'))[0] is None

    monkeypatch.setattr(LocalBackend, 'put', put)
    record = Record()
    make_runner(tmp_path, record=record, resume=True, max_keep_ckpts=1).train()
    assert min(record.losses) == 3
    assert sorted(glob.glob(str(tmp_path / '*.pth'))) == [str(tmp_path / 'iter_8.pth')]


def test_save_order(tmp_path, monkeypatch):
    """New file in place and named by last_checkpoint before the outdated one is removed."""
    events = []
    replace, remove = os.replace, os.remove
    monkeypatch.setattr(os, 'replace', lambda a, b: (events.append(('replace', osp.basename(
        b))), replace(a, b))[1])
    monkeypatch.setattr(os, 'remove', lambda p: (events.append(('remove', osp.basename(p))),
                                                 remove(p))[1])
    make_runner(tmp_path, max_iters=4, max_keep_ckpts=1).train()
    assert events == [('replace', 'iter_2.pth'), ('replace', 'last_checkpoint'),
                      ('replace', 'iter_4.pth'), ('replace', 'last_checkpoint'),
                      ('remove', 'iter_2.pth')]


def test_stale_temporary_removed(tmp_path):
    make_runner(tmp_path, max_iters=2).train()
    stale = tmp_path / '.iter_4.pth.tmp-12345'
    stale.write_bytes(b'half a checkpoint')
    make_runner(tmp_path, max_iters=4, resume=True).train()
    assert not stale.exists()


# --- best checkpoints (save_best) are saved atomically too -------------------------------


@pytest.fixture
def rising_score(monkeypatch):
    """Each validation scores higher than the one before, so every one saves a new best."""
    calls = []

    def compute_metrics(self, results):
        calls.append(len(results))
        return dict(score=float(len(calls)))

    monkeypatch.setattr(CountMetric, 'compute_metrics', compute_metrics)
    return calls


def _best_hook(hook_cls):
    return lambda **kw: hook_cls(save_best='score', rule='greater', **kw)


def _fail_best_save(monkeypatch, name):
    """Disk full after half the bytes of the save whose file name contains ``name``."""
    put = LocalBackend.put

    def failing_put(self, obj, filepath):
        if name in str(filepath):
            with open(filepath, 'wb') as f:
                f.write(obj[:len(obj) // 2])
            raise OSError(28, 'No space left on device')
        return put(self, obj, filepath)

    monkeypatch.setattr(LocalBackend, 'put', failing_put)
    return put


def test_failed_best_save_keeps_previous_best(tmp_path, monkeypatch, rising_score):
    """The save of a new best checkpoint dies midway: the previous best is still there and
    loads, no partial file is left, and a resumed run replaces the old best as usual."""
    put = _fail_best_save(monkeypatch, 'best_score_iter_4')
    kw = dict(hook_cls=_best_hook(SafeCheckpointHook), max_iters=6, val_interval=2,
              max_keep_ckpts=1)
    with pytest.raises(OSError, match='No space left'):
        make_runner(tmp_path, **kw).train()
    assert len(rising_score) == 2  # the second validation found a better score
    best2 = tmp_path / 'best_score_iter_2.pth'
    assert sorted(glob.glob(str(tmp_path / '*.pth'))) == [str(best2), str(tmp_path / 'iter_4.pth')]
    assert glob.glob(str(tmp_path / '.*')) == []  # the partial temporary file is gone
    error, meta = check_checkpoint(str(best2))
    assert error is None and meta['iter'] == 2
    ckpt = torch.load(best2, weights_only=False)
    assert ckpt['message_hub']['runtime_info']['best_score'] == 1.0
    assert ckpt['message_hub']['runtime_info']['best_ckpt'] == str(best2)

    # resume from iter_4 (written before the failed validation): its best is best_score_iter_2
    monkeypatch.setattr(LocalBackend, 'put', put)
    make_runner(tmp_path, resume=True, **kw).train()
    assert sorted(glob.glob(str(tmp_path / '*.pth'))) == [
        str(tmp_path / 'best_score_iter_6.pth'), str(tmp_path / 'iter_6.pth')]
    assert glob.glob(str(tmp_path / '.*')) == []
    state = torch.load(tmp_path / 'iter_6.pth', weights_only=False)['message_hub']
    assert state['runtime_info']['best_ckpt'] == str(tmp_path / 'best_score_iter_6.pth')


def test_mmengine_failed_best_save_loses_best(tmp_path, monkeypatch, rising_score):
    """Guards the test above: mmengine's CheckpointHook deletes the previous best first and
    writes the new one in place, so the same failure leaves only a truncated best file."""
    _fail_best_save(monkeypatch, 'best_score_iter_4')
    with pytest.raises(OSError, match='No space left'):
        make_runner(tmp_path, hook_cls=_best_hook(CheckpointHook), max_iters=6, val_interval=2,
                    max_keep_ckpts=1).train()
    assert not (tmp_path / 'best_score_iter_2.pth').exists()
    assert check_checkpoint(str(tmp_path / 'best_score_iter_4.pth'))[0] is not None


def test_best_save_order(tmp_path, monkeypatch, rising_score):
    """The new best is in place, and the regular checkpoint naming it too, before the
    previous best is removed."""
    events = []
    replace, remove = os.replace, os.remove
    monkeypatch.setattr(os, 'replace', lambda a, b: (events.append(('replace', osp.basename(
        b))), replace(a, b))[1])
    monkeypatch.setattr(os, 'remove', lambda p: (events.append(('remove', osp.basename(p))),
                                                 remove(p))[1])
    make_runner(tmp_path, hook_cls=_best_hook(SafeCheckpointHook), max_iters=4, val_interval=2,
                max_keep_ckpts=1).train()
    at_4 = events[events.index(('replace', 'iter_4.pth')):]
    assert at_4 == [('replace', 'iter_4.pth'), ('replace', 'last_checkpoint'),
                    ('remove', 'iter_2.pth'),
                    ('replace', 'best_score_iter_4.pth'),
                    ('replace', 'iter_4.pth'), ('replace', 'last_checkpoint'),
                    ('remove', 'best_score_iter_2.pth')]
    assert sorted(glob.glob(str(tmp_path / '*.pth'))) == [
        str(tmp_path / 'best_score_iter_4.pth'), str(tmp_path / 'iter_4.pth')]
