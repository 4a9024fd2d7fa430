"""Train a segmentor with an mmseg-ovseg (or plain mmseg) config.

    python tools/train.py CONFIG [--work-dir DIR] [--resume [CKPT]] [--amp] [--cfg-options k=v ...]
    bash tools/dist_train.sh CONFIG NUM_PROCS [args]          # torchrun, --launcher pytorch
    sh tools/slurm_train.sh PARTITION JOB_NAME CONFIG [args]  # srun, --launcher slurm

``mmseg_ovseg`` is imported before the config is read, so its models, datasets and metrics are
registered even when a config lacks ``custom_imports``, and mmengine checkpoints load under
torch's weights-only ``torch.load`` (see ``mmseg_ovseg/utils/checkpoint.py``).
"""
import argparse
import logging
import os
import os.path as osp
import sys

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if REPO_ROOT not in sys.path:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, REPO_ROOT)

from mmengine.config import Config, DictAction  # noqa: E402
from mmengine.logging import print_log  # noqa: E402
from mmengine.runner import Runner  # noqa: E402

import mmseg_ovseg  # noqa: E402,F401  (fills registries, registers safe checkpoint globals)
from mmseg_ovseg.engine import check_checkpoint, find_resumable_checkpoint  # noqa: E402
from mmseg_ovseg.utils import has_accelerator, setup_cpu_distributed  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Train a segmentor (mmseg-ovseg)')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='directory for logs and checkpoints')
    parser.add_argument(
        '--resume', nargs='?', const='auto', default=None, metavar='CHECKPOINT',
        help='resume training: alone, from the latest checkpoint in the work dir (if any); '
        'with a path, from that checkpoint')
    parser.add_argument(
        '--amp', action='store_true',
        help='automatic mixed precision (AmpOptimWrapper; needs a CUDA/NPU/MLU device)')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override config keys, e.g. train_cfg.max_iters=10 '
        'env_cfg.dist_cfg.backend=gloo; lists as key="[a,b]"')
    parser.add_argument(
        '--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none',
        help='job launcher')
    # torch.distributed.launch passes --local_rank (torch < 2.0) or --local-rank.
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    # `mim train` may append `--gpus N` (mim#157); the device count comes from the launcher,
    # so it is accepted and ignored. Hidden from -h: mim only appends it if -h shows it.
    parser.add_argument('--gpus', type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument('--debug', action='store_true',
                        help='on an error, print the full traceback (default: one line)')
    args = parser.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def setup_cfg(args):
    """Load the config and apply the command-line options to it."""
    if not osp.isfile(args.config):
        raise FileNotFoundError(f'config file not found: {args.config}')
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        # clip_pretrained=X also sets every CLIP tower's pretrained (read by init_weights)
        from mmseg_ovseg.apis.config import merge_cfg_options
        merge_cfg_options(cfg, args.cfg_options)

    # work_dir priority: command line > config > ./work_dirs/<config name>
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(args.config))[0])

    if args.gpus is not None:
        print_log(f'--gpus {args.gpus} ignored: the number of processes is set by the '
                  'launcher (torchrun/srun), one device per process', logger='current',
                  level=logging.WARNING)

    if args.amp:
        enable_amp(cfg)
    adapt_amp_to_device(cfg)
    if args.resume is not None:
        resolve_resume(cfg, args.resume)
    return cfg


def resolve_resume(cfg, resume):
    """``--resume`` (``'auto'``: the newest checkpoint of the work dir that loads, skipping
    broken ones with a warning; else a path, which must load) -> ``cfg.resume``/``load_from``.

    The run's seed is taken from the checkpoint (as mmengine's ``resume`` does, but before the
    data loaders are built, whose sampler and worker seeds derive from it): a config without a
    fixed seed then continues with the data order of the interrupted run.
    """
    if resume == 'auto':
        choice = find_resumable_checkpoint(cfg.work_dir)
        if choice is None:
            print_log(f'--resume: no checkpoint in {cfg.work_dir}; training from scratch',
                      logger='current', level=logging.WARNING)
            cfg.resume = False
            cfg.load_from = None
            return
        path, meta = choice.path, choice.meta
    else:
        reason, meta = check_checkpoint(resume)
        if reason is not None:
            raise ValueError(f'--resume checkpoint {resume}: {reason}')
        path = resume
    cfg.resume = True
    cfg.load_from = path
    seed = meta.get('seed')
    randomness = dict(cfg.get('randomness') or {})
    if seed is not None and randomness.get('seed') != seed:
        if randomness.get('seed') is not None:
            print_log(f'--resume: seed {seed} of {path} replaces the config seed '
                      f'{randomness["seed"]}', logger='current', level=logging.WARNING)
        randomness['seed'] = seed
        cfg.randomness = randomness


def enable_amp(cfg):
    """``--amp``: mmengine's AmpOptimWrapper on accelerators, bfloat16 autocast on CPU."""
    wrapper = cfg.optim_wrapper.get('type', 'OptimWrapper')
    if wrapper in ('AmpOptimWrapper', 'CPUAmpOptimWrapper'):
        print_log('AMP is already enabled in the config', logger='current',
                  level=logging.WARNING)
        return
    if wrapper != 'OptimWrapper':
        raise ValueError(f'--amp needs optim_wrapper.type OptimWrapper, got {wrapper!r}')
    cfg.optim_wrapper.type = 'AmpOptimWrapper'
    cfg.optim_wrapper.loss_scale = 'dynamic'


def adapt_amp_to_device(cfg):
    """AMP configs (e.g. SAN's recipe) train on CPU with bfloat16 autocast instead of failing
    in mmengine's AmpOptimWrapper, which needs an accelerator."""
    if cfg.optim_wrapper.get('type') == 'AmpOptimWrapper' and not has_accelerator():
        print_log('no CUDA/NPU/MLU/MUSA device: AmpOptimWrapper -> CPUAmpOptimWrapper '
                  '(bfloat16 autocast)', logger='current', level=logging.WARNING)
        cfg.optim_wrapper.type = 'CPUAmpOptimWrapper'


def main(argv=None):
    args = parse_args(argv)
    cfg = setup_cfg(args)
    setup_cpu_distributed(cfg)  # torchrun on a CPU-only machine (gloo)
    if 'runner_type' in cfg:
        from mmseg.registry import RUNNERS
        runner = RUNNERS.build(cfg)
    else:
        runner = Runner.from_cfg(cfg)
    runner.train()


if __name__ == '__main__':
    # one-line errors (--debug: traceback); under torchrun, exit when the agent dies
    from mmseg_ovseg.utils.cli import run_cli
    sys.exit(run_cli(main, 'train.py'))
