"""Two-process distributed training on CPU: tools/dist_train.sh (torchrun --nproc_per_node 2)
-> tools/train.py --launcher pytorch, gloo backend, tiny synthetic config, 2 iterations."""
import json
import os
import os.path as osp
import socket
import subprocess
import sys
import textwrap

from mmseg_ovseg.datasets.synthetic import generate_synthetic_dataset

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIG = osp.join(REPO, 'configs', 'baseline_tiny_synthetic.py')

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
