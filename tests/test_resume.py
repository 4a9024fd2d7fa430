"""kill -9 and --resume with the tiny SAN and ZegCLIP configs through tools/train.py.

Each training runs in a subprocess (a driver around ``tools/train.py``'s ``main``) that
records every iteration's losses and kills itself with SIGKILL at a chosen point: at a random
iteration (before or after its step), or halfway through writing a checkpoint. The killed
run is resumed with ``--resume``; every loss it logged, before and after the kill, must equal
the uninterrupted run's loss of that iteration bit for bit, and the final weights and
optimizer state must be identical. The random choices are printed on failure; set
``RESUME_TEST_SEED`` to replay them.
"""
import glob
import json
import os
import os.path as osp
import random
import subprocess
import sys
import time

import pytest
import torch

from mmseg_ovseg.datasets.synthetic import generate_synthetic_dataset
from mmseg_ovseg.engine import check_checkpoint

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
PY = sys.executable
pytestmark = pytest.mark.slow  # every test here takes seconds

DRIVER = r'''
import importlib.util, json, os, signal, sys
repo = sys.argv[1]
sys.path.insert(0, repo)
import torch
torch.set_num_threads(1)
import mmseg_ovseg  # noqa: F401
from mmengine.fileio.backends import LocalBackend
from mmengine.hooks import Hook
from mmseg.registry import HOOKS

LOSSES = os.environ['RESUME_TEST_LOSSES']
KILL_AT = int(os.environ.get('RESUME_TEST_KILL_AT', '0'))
KILL_PHASE = os.environ.get('RESUME_TEST_KILL_PHASE', 'after')
KILL_IN_SAVE = int(os.environ.get('RESUME_TEST_KILL_IN_SAVE', '0'))


def die():
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


@HOOKS.register_module()
class RecordLossesAndDie(Hook):
    priority = 'HIGHEST'

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        if KILL_PHASE == 'before' and runner.iter + 1 == KILL_AT:
            die()

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        rec = dict(iter=runner.iter + 1, losses={k: float(v) for k, v in outputs.items()})
        with open(LOSSES, 'a') as f:
            f.write(json.dumps(rec) + '\n')
        if KILL_PHASE == 'after' and runner.iter + 1 == KILL_AT:
            die()


put = LocalBackend.put


def put_then_die(self, obj, filepath):
    """Killed halfway through writing the checkpoint of iteration KILL_IN_SAVE."""
    if KILL_IN_SAVE and f'iter_{KILL_IN_SAVE}.pth' in os.path.basename(str(filepath)):
        with open(filepath, 'wb') as f:
            f.write(obj[:len(obj) // 2])
            f.flush()
            os.fsync(f.fileno())
        die()
    return put(self, obj, filepath)


LocalBackend.put = put_then_die
spec = importlib.util.spec_from_file_location('train_tool', os.path.join(repo, 'tools', 'train.py'))
train = importlib.util.module_from_spec(spec)
spec.loader.exec_module(train)
setup_cfg = train.setup_cfg


def setup_with_recorder(args):
    cfg = setup_cfg(args)
    cfg.custom_hooks = list(cfg.get('custom_hooks') or []) + [dict(type='RecordLossesAndDie')]
    return cfg


train.setup_cfg = setup_with_recorder
train.main(sys.argv[2:])
'''


def tiny_options(data_root, max_iters, interval, val_interval, workers, hook=None):
    opts = [f'train_cfg.max_iters={max_iters}', f'train_cfg.val_interval={val_interval}',
            f'default_hooks.checkpoint.interval={interval}',
            'default_hooks.checkpoint.max_keep_ckpts=1', 'default_hooks.logger.interval=1',
            'train_dataloader.batch_size=2', f'train_dataloader.num_workers={workers}']
    if hook is not None:  # e.g. mmengine's CheckpointHook, to reproduce the issue
        opts.append(f'default_hooks.checkpoint.type={hook}')
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        opts += [f'{loader}.persistent_workers=False', f'{loader}.dataset.data_root={data_root}']
    return opts


class Trainer:
    """Runs the driver; all runs of one work dir append to one losses file."""

    def __init__(self, tmp, config, opts):
        self.tmp = str(tmp)
        self.driver = osp.join(self.tmp, 'driver.py')
        with open(self.driver, 'w') as f:
            f.write(DRIVER)
        self.config = osp.join(REPO, 'configs', config)
        self.opts = opts

    def losses_file(self, work_dir):
        return osp.join(self.tmp, osp.basename(work_dir) + '.jsonl')

    def run(self, work_dir, resume=False, **kill):
        env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=REPO,
                   RESUME_TEST_LOSSES=self.losses_file(work_dir))
        env.update({f'RESUME_TEST_{k.upper()}': str(v) for k, v in kill.items()})
        cmd = [PY, self.driver, REPO, self.config, '--work-dir', work_dir]
        cmd += ['--resume'] if resume else []
        proc = subprocess.run(cmd + ['--cfg-options'] + self.opts, capture_output=True,
                              text=True, env=env, timeout=600, cwd=REPO)
        return proc.returncode, proc.stdout + proc.stderr

    def records(self, work_dir):
        with open(self.losses_file(work_dir)) as f:
            return [json.loads(line) for line in f]


def compare_runs(trainer, ref_dir, run_dir, max_iters):
    """(number of per-iteration loss values equal / compared, max abs difference) of all the
    records of ``run_dir`` against the uninterrupted ``ref_dir``; final states equal?"""
    ref = {r['iter']: r['losses'] for r in trainer.records(ref_dir)}
    equal = total = 0
    max_diff = 0.0
    for rec in trainer.records(run_dir):
        for k, v in rec['losses'].items():
            total += 1
            equal += v == ref[rec['iter']][k]
            max_diff = max(max_diff, abs(v - ref[rec['iter']][k]))
    a = torch.load(osp.join(ref_dir, f'iter_{max_iters}.pth'), weights_only=True)
    b = torch.load(osp.join(run_dir, f'iter_{max_iters}.pth'), weights_only=True)
    weights_equal = all(torch.equal(a['state_dict'][k], b['state_dict'][k])
                        for k in a['state_dict'])
    opt_a, opt_b = a['optimizer']['state'], b['optimizer']['state']
    optim_equal = opt_a.keys() == opt_b.keys() and all(
        torch.equal(opt_a[i][s], opt_b[i][s]) for i in opt_a for s in opt_a[i])
    return equal, total, max_diff, weights_equal and optim_equal


@pytest.fixture(scope='module')
def data_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('synthetic'))
    generate_synthetic_dataset(root, num_train=8, num_val=2, seed=0, size=64)
    return root


@pytest.fixture
def rng():
    seed = int(os.environ.get('RESUME_TEST_SEED', time.time_ns() % 2**32))
    print(f'RESUME_TEST_SEED={seed}')
    return random.Random(seed)


def _last_checkpoint(work_dir):
    with open(osp.join(work_dir, 'last_checkpoint')) as f:
        return f.read().strip()


def test_san_kill_anywhere_and_during_save(tmp_path, data_root, rng):
    """SAN (random point sampling in the mask losses), in-process loading, validation and a
    checkpoint every 4 iterations: killed at a random iteration, resumed, killed halfway
    through the next checkpoint write, resumed to the end."""
    max_iters, interval = 10, 4
    trainer = Trainer(tmp_path, 'san_tiny_synthetic.py',
                      tiny_options(data_root, max_iters, interval, interval, workers=0))
    ref, run = str(tmp_path / 'ref'), str(tmp_path / 'run')
    code, out = trainer.run(ref)
    assert code == 0, out[-3000:]

    kill_at, phase = rng.randint(interval + 1, max_iters - 1), rng.choice(['before', 'after'])
    what = f'killed {phase} iteration {kill_at}'
    code, out = trainer.run(run, kill_at=kill_at, kill_phase=phase)
    assert code == -9, (what, out[-3000:])
    kept = _last_checkpoint(run)
    assert check_checkpoint(kept)[0] is None, what
    step = int(osp.basename(kept)[len('iter_'):-len('.pth')])
    next_save = min(step + interval, max_iters)

    code, out = trainer.run(run, resume=True, kill_in_save=next_save)
    assert code == -9, (what, out[-3000:])
    assert f'resumed epoch: 0, iter: {step}' in out, (what, out[-3000:])
    # the kill during the save cost nothing: the previous checkpoint is intact and named
    assert _last_checkpoint(run) == kept and check_checkpoint(kept)[0] is None, what
    assert not osp.exists(osp.join(run, f'iter_{next_save}.pth')), what
    assert glob.glob(osp.join(run, f'.iter_{next_save}.pth.tmp-*')), what  # the partial file

    code, out = trainer.run(run, resume=True)
    assert code == 0, (what, out[-3000:])
    assert not glob.glob(osp.join(run, '.*tmp*')), what
    assert sorted(glob.glob(osp.join(run, '*.pth'))) == [osp.join(run, f'iter_{max_iters}.pth')]

    equal, total, max_diff, states_equal = compare_runs(trainer, ref, run, max_iters)
    iters = [r['iter'] for r in trainer.records(run)]
    assert set(iters) == set(range(1, max_iters + 1)) and len(iters) >= max_iters, iters
    assert equal == total, f'{what}: {equal}/{total} losses equal, max diff {max_diff}'
    assert states_equal, f'{what}: final weights/optimizer state differ'


def test_zegclip_kill_with_loader_workers(tmp_path, data_root, rng):
    """ZegCLIP (prompt dropout) with 2 loader workers (their random states come back by
    re-reading the trained batches)."""
    max_iters, interval = 8, 3
    trainer = Trainer(tmp_path, 'zegclip_tiny_synthetic-zs.py',
                      tiny_options(data_root, max_iters, interval, 1000, workers=2))
    ref, run = str(tmp_path / 'ref'), str(tmp_path / 'run')
    code, out = trainer.run(ref)
    assert code == 0, out[-3000:]
    kill_at, phase = rng.randint(interval + 1, max_iters - 1), rng.choice(['before', 'after'])
    what = f'killed {phase} iteration {kill_at}'
    code, out = trainer.run(run, kill_at=kill_at, kill_phase=phase)
    assert code == -9, (what, out[-3000:])
    code, out = trainer.run(run, resume=True)
    assert code == 0, (what, out[-3000:])
    equal, total, max_diff, states_equal = compare_runs(trainer, ref, run, max_iters)
    assert equal == total, f'{what}: {equal}/{total} losses equal, max diff {max_diff}'
    assert states_equal, f'{what}: final weights/optimizer state differ'
