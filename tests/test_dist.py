"""Two-process distributed training on CPU: tools/dist_train.sh (torchrun --nproc_per_node 2)
-> tools/train.py --launcher pytorch, gloo backend, tiny synthetic config, 2 iterations; and
killing the launcher (kill -9 of the torchrun agent, SIGTERM/SIGINT to dist_train.sh) ends the
workers."""
import json
import os
import os.path as osp
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from mmseg_ovseg.datasets.synthetic import generate_synthetic_dataset

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIG = osp.join(REPO, 'configs', 'baseline_tiny_synthetic.py')

pytestmark = pytest.mark.slow  # every test here takes seconds

# A hook that makes every rank report what it trained (mmengine logs from rank 0 only).
MARKER = '''
import json, os.path as osp
from mmengine.dist import get_rank, get_world_size
from mmengine.hooks import Hook
from mmengine.registry import HOOKS


@HOOKS.register_module()
class RankMarkerHook(Hook):

    def __init__(self, out_dir):
        self.out_dir = out_dir
        self.iters = []

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        self.iters.append(runner.iter + 1)

    def after_train(self, runner):
        model = runner.model.module if hasattr(runner.model, 'module') else runner.model
        weight = model.backbone.visual.conv1.weight
        with open(osp.join(self.out_dir, f'rank{get_rank()}.json'), 'w') as f:
            json.dump(dict(rank=get_rank(), world_size=get_world_size(), iters=self.iters,
                           wrapper=type(runner.model).__name__,
                           weight_sum=float(weight.double().sum())), f)
'''


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def test_two_process_cpu_training(tmp_path):
    data_root = str(tmp_path / 'data')
    generate_synthetic_dataset(data_root, num_train=4, num_val=2, seed=0, size=64)
    (tmp_path / 'rank_marker.py').write_text(MARKER)
    work_dir = tmp_path / 'work'
    work_dir.mkdir()
    config = tmp_path / 'dist_cfg.py'
    config.write_text(textwrap.dedent(f'''
        _base_ = [{CONFIG!r}]
        custom_imports = dict(imports=['mmseg_ovseg', 'rank_marker'],
                              allow_failed_imports=False)
        custom_hooks = [dict(type='RankMarkerHook', out_dir={str(work_dir)!r})]
    '''))
    opts = ['env_cfg.dist_cfg.backend=gloo', 'train_cfg.max_iters=2',
            'train_cfg.val_interval=1000', 'default_hooks.checkpoint.interval=2',
            'default_hooks.logger.interval=1', 'train_dataloader.batch_size=1',
            'train_dataloader.num_workers=0', 'train_dataloader.persistent_workers=False',
            f'train_dataloader.dataset.data_root={data_root}',
            'val_dataloader.num_workers=0', 'val_dataloader.persistent_workers=False',
            f'val_dataloader.dataset.data_root={data_root}']
    env = dict(os.environ, PYTHONPATH=f'{REPO}:{tmp_path}', PYTHON=sys.executable,
               PORT=str(free_port()), OMP_NUM_THREADS='1')
    proc = subprocess.run(
        ['bash', osp.join(REPO, 'tools', 'dist_train.sh'), str(config), '2', '--work-dir',
         str(work_dir), '--cfg-options'] + opts,
        capture_output=True, text=True, env=env, timeout=240, cwd=str(tmp_path))
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]

    reports = [json.loads((work_dir / f'rank{r}.json').read_text()) for r in (0, 1)]
    for rank, report in enumerate(reports):
        assert report['rank'] == rank and report['world_size'] == 2
        assert report['iters'] == [1, 2]
        assert report['wrapper'] == 'CPUDistributedDataParallel'
    # DDP kept the replicas identical
    assert reports[0]['weight_sum'] == reports[1]['weight_sum']
    # rank 0 alone writes the checkpoint
    ckpts = sorted(p.name for p in work_dir.glob('*.pth'))
    assert ckpts == ['iter_2.pth'], ckpts


# --------------------------------------------------------------------------- launcher kills
# Each worker records its pid when its config is read (custom_imports) and marks the first
# training iteration, so the test kills a job that is training.
PID_MARKER = '''
import os, os.path as osp
from mmengine.hooks import Hook
from mmengine.registry import HOOKS

OUT = os.environ['OVSEG_TEST_PID_DIR']
with open(osp.join(OUT, 'pid%s' % os.environ['RANK']), 'w') as f:
    f.write(str(os.getpid()))


@HOOKS.register_module()
class TrainingMarkerHook(Hook):

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        path = osp.join(OUT, 'training%s' % os.environ['RANK'])
        if not osp.exists(path):
            open(path, 'w').close()
'''


def _alive(pid):
    """pid exists and is not a zombie."""
    try:
        with open(f'/proc/{pid}/stat') as f:
            return f.read().rsplit(')', 1)[1].split()[0] != 'Z'
    except OSError:
        return False


def _parent(pid):
    with open(f'/proc/{pid}/stat') as f:
        return int(f.read().rsplit(')', 1)[1].split()[1])


def _group(pgids):
    """Live pids whose process group is one of ``pgids`` (the workers and their children:
    torchrun starts each worker in a session of its own)."""
    found = []
    for name in os.listdir('/proc'):
        if name.isdigit():
            try:
                with open(f'/proc/{name}/stat') as f:
                    fields = f.read().rsplit(')', 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) in pgids and fields[0] != 'Z':
                found.append(int(name))
    return found


def _wait_for(predicate, timeout, step=0.2):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


@pytest.mark.parametrize('target,sig', [('agent', signal.SIGKILL),
                                        ('script', signal.SIGTERM),
                                        ('script', signal.SIGINT)])
def test_launcher_kill_ends_workers(tmp_path, target, sig):
    """`kill -9` of the torchrun agent, or SIGTERM/SIGINT to dist_train.sh, while two gloo
    workers train: every worker (and anything in its process group) is gone within seconds."""
    data_root = str(tmp_path / 'data')
    generate_synthetic_dataset(data_root, num_train=4, num_val=2, seed=0, size=32)
    (tmp_path / 'pid_marker.py').write_text(PID_MARKER)
    pid_dir = tmp_path / 'pids'
    pid_dir.mkdir()
    config = tmp_path / 'kill_cfg.py'
    config.write_text(textwrap.dedent(f'''
        _base_ = [{CONFIG!r}]
        custom_imports = dict(imports=['mmseg_ovseg', 'pid_marker'], allow_failed_imports=False)
        custom_hooks = [dict(type='TrainingMarkerHook')]
    '''))
    opts = ['env_cfg.dist_cfg.backend=gloo', 'train_cfg.max_iters=100000',
            'train_cfg.val_interval=100000', 'default_hooks.checkpoint.interval=100000',
            'train_dataloader.batch_size=1', 'train_dataloader.num_workers=0',
            'train_dataloader.persistent_workers=False',
            f'train_dataloader.dataset.data_root={data_root}', 'val_dataloader.num_workers=0',
            'val_dataloader.persistent_workers=False',
            f'val_dataloader.dataset.data_root={data_root}']
    env = dict(os.environ, PYTHONPATH=f'{REPO}:{tmp_path}', PYTHON=sys.executable,
               PORT=str(free_port()), OMP_NUM_THREADS='1', OVSEG_TEST_PID_DIR=str(pid_dir))
    log = open(tmp_path / 'launcher.log', 'w')
    script = subprocess.Popen(
        ['bash', osp.join(REPO, 'tools', 'dist_train.sh'), str(config), '2', '--work-dir',
         str(tmp_path / 'work'), '--cfg-options'] + opts,
        stdout=log, stderr=subprocess.STDOUT, env=env, cwd=str(tmp_path))
    workers = []
    try:
        started = _wait_for(lambda: all((pid_dir / f'training{r}').exists() for r in (0, 1))
                            or script.poll() is not None, timeout=150)
        assert started and script.poll() is None, (tmp_path / 'launcher.log').read_text()[-3000:]
        workers = [int((pid_dir / f'pid{r}').read_text()) for r in (0, 1)]
        agent = _parent(workers[0])
        assert _parent(workers[1]) == agent
        victim = agent if target == 'agent' else script.pid
        os.kill(victim, sig)
        gone = _wait_for(lambda: not _group(workers), timeout=10)
        assert gone, f'still running 10 s after {sig!r} to the {target}: {_group(workers)}'
        # the launcher ends too (it is the agent after exec), with a failure status
        script.wait(timeout=30)
        assert script.returncode != 0
    finally:
        for pid in _group(workers) + ([script.pid] if script.poll() is None else []):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        script.wait(timeout=10)
        log.close()


def test_cli_closes_the_process_group(tmp_path):
    """run_cli destroys the process group a tool's main() left initialized (a gloo group left
    to the interpreter's exit aborted rank 0 of dist_test_ov.sh once), and close_distributed
    is a no-op without one."""
    import torch.distributed as dist

    from mmseg_ovseg.utils.cli import run_cli
    from mmseg_ovseg.utils.dist import close_distributed
    close_distributed()  # nothing initialized: nothing to do
    seen = []

    def main(argv):
        dist.init_process_group('gloo', init_method=f'file://{tmp_path}/store', rank=0,
                                world_size=1)
        seen.append(dist.is_initialized())

    try:
        assert run_cli(main, 'tool.py', []) == 0
        assert seen == [True] and not dist.is_initialized()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
