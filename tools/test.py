"""Evaluate a checkpoint with the config's test dataloader and evaluator.

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out DIR] [--show-dir DIR] [--tta]
    bash tools/dist_test.sh CONFIG CHECKPOINT NUM_PROCS [args]

``--out`` writes the predicted label maps as PNGs (the metric's ``output_dir``); ``--show-dir``
turns on the visualization hook for every test image and saves the drawings there.

CHECKPOINT may be a work dir (its ``last_checkpoint`` names the file). The checkpoint is checked
against the built model before testing (``mmseg_ovseg.utils.load_guard``): a file of another
architecture, without weights or with NaN/inf weights is refused. Errors are one line on stderr
with exit status 1; ``--debug`` adds the traceback.
"""
import argparse
import logging
import os
import os.path as osp
import sys

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if REPO_ROOT not in sys.path:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, REPO_ROOT)

import mmseg_ovseg  # noqa: E402,F401  (fills registries, registers safe checkpoint globals)
from mmengine.config import Config, ConfigDict, DictAction  # noqa: E402
from mmengine.logging import print_log  # noqa: E402
from mmengine.runner import Runner  # noqa: E402

from mmseg_ovseg.utils import setup_cpu_distributed  # noqa: E402
from mmseg_ovseg.utils.cli import DEBUG_HELP, run_cli  # noqa: E402
from mmseg_ovseg.utils.load_guard import check_checkpoint_file, resolve_checkpoint_path  # noqa


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Test (and evaluate) a segmentor')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file (or a work dir: its last_checkpoint)')
    parser.add_argument('--work-dir', help='directory for logs and the metrics json')
    parser.add_argument('--out', help='directory to save predicted label maps (PNG)')
    parser.add_argument('--show-dir', help='directory to save drawn predictions')
    parser.add_argument('--tta', action='store_true',
                        help='test-time augmentation (config tta_model + tta_pipeline)')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override config keys, e.g. test_dataloader.batch_size=2')
    parser.add_argument(
        '--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none',
        help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    parser.add_argument('--gpus', type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument('--debug', action='store_true', help=DEBUG_HELP)
    args = parser.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def _metric_cfgs(evaluator):
    """The metric config dicts of ``test_evaluator`` (a dict, a list, or an Evaluator dict)."""
    if isinstance(evaluator, (list, tuple)):
        return list(evaluator)
    if 'metrics' in evaluator:  # dict(type='Evaluator', metrics=[...])
        metrics = evaluator['metrics']
        return list(metrics) if isinstance(metrics, (list, tuple)) else [metrics]
    return [evaluator]


def setup_cfg(args):
    if not osp.isfile(args.config):
        raise FileNotFoundError(f'config file not found: {args.config}')
    args.checkpoint = resolve_checkpoint_path(args.checkpoint)
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)

    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(args.config))[0])
    cfg.load_from = args.checkpoint
    cfg.resume = False

    if args.gpus is not None:
        print_log(f'--gpus {args.gpus} ignored: processes are set by the launcher',
                  logger='current', level=logging.WARNING)

    if args.show_dir:
        hooks = cfg.get('default_hooks') or ConfigDict()
        if 'visualization' not in hooks:
            raise KeyError(f'--show-dir needs default_hooks.visualization in {args.config}, '
                           "e.g. visualization=dict(type='SegVisualizationHook')")
        hooks.visualization.update(draw=True, interval=1)
        if cfg.get('visualizer') is None:
            raise KeyError(f'--show-dir needs a `visualizer` in {args.config}')
        cfg.visualizer.save_dir = args.show_dir

    if args.tta:
        for key in ('tta_model', 'tta_pipeline'):
            if cfg.get(key) is None:
                raise KeyError(f'--tta needs `{key}` in {args.config}')
        cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline
        cfg.tta_model.module = cfg.model
        cfg.model = cfg.tta_model

    if args.out is not None:
        for metric in _metric_cfgs(cfg.test_evaluator):
            metric['output_dir'] = args.out
    return cfg


def main(argv=None):
    args = parse_args(argv)
    cfg = setup_cfg(args)
    setup_cpu_distributed(cfg)  # torchrun on a CPU-only machine (gloo)
    runner = Runner.from_cfg(cfg)
    # The runner loads `load_from` non-strictly; refuse a checkpoint that does not fit first.
    check_checkpoint_file(runner.model, args.checkpoint)
    metrics = runner.test()
    return metrics


if __name__ == '__main__':
    sys.exit(run_cli(main, 'test.py'))
