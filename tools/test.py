"""Evaluate a checkpoint with the config's test dataloader and evaluator.

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out DIR] [--show-dir DIR] [--tta]
    bash tools/dist_test.sh CONFIG CHECKPOINT NUM_PROCS [args]

``--out DIR`` writes the predicted label maps as PNGs, mirroring the images' paths below the
dataset's image folder (``data_root/data_prefix.img_path``): ``a/x.jpg`` and ``b/x.jpg`` give
``DIR/a/x.png`` and ``DIR/b/x.png`` (mmseg's metric ``output_dir`` writes ``DIR/x.png`` for
both, the second overwriting the first). Values as mmseg's (``+1`` under
``reduce_zero_label``), uint8, or uint16 where a label exceeds 255 (ADE-847, PC-459: mmseg's
uint8 wraps them). Referring samples add ``_sent<sent_id>`` (one image, several sentences). An
image outside the image folder keeps its file name only; two different inputs that would
write the same file stop the run with both named. ``--show-dir`` turns on the visualization
hook for every test image and saves the drawings there.

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

import numpy as np  # noqa: E402
from mmengine.config import Config, ConfigDict, DictAction  # noqa: E402
from mmengine.evaluator import BaseMetric  # noqa: E402
from mmengine.logging import print_log  # noqa: E402
from mmengine.runner import Runner  # noqa: E402
from mmseg.registry import METRICS  # noqa: E402

import mmseg_ovseg  # noqa: E402,F401  (fills registries, registers safe checkpoint globals)
from mmseg_ovseg.utils import setup_cpu_distributed  # noqa: E402
from mmseg_ovseg.utils.cli import DEBUG_HELP, run_cli  # noqa: E402
from mmseg_ovseg.utils.load_guard import check_checkpoint_file, resolve_checkpoint_path  # noqa


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Test (and evaluate) a segmentor')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file (or a work dir: its last_checkpoint)')
    parser.add_argument('--work-dir', help='directory for logs and the metrics json')
    parser.add_argument('--out', help='directory to save predicted label maps (PNG), in the '
                        "folders of the images below the dataset's image folder")
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


class OutputCollisionError(ValueError):
    """Two different inputs would write the same prediction file."""


@METRICS.register_module(name='OVSegPredictionWriter', force=True)
class PredictionWriter(BaseMetric):
    """Writes ``pred_sem_seg`` of each sample to ``output_dir``, mirroring ``img_path`` below
    the first of ``image_roots`` that holds it (module docstring, ``--out``). Computes no
    metric: its results are the ``(output, input)`` pairs, checked across ranks at the end.

    Args:
        output_dir (str): where the PNGs go.
        image_roots (list[str]): the dataset's image folders.
    """
    default_prefix = 'out'

    def __init__(self, output_dir: str, image_roots=(), collect_device: str = 'cpu',
                 prefix=None):
        super().__init__(collect_device=collect_device, prefix=prefix)
        self.output_dir = osp.abspath(output_dir)
        self.image_roots = [osp.abspath(r) for r in image_roots if r]
        self._sources = {}  # output path -> the input that wrote it (this rank)

    def output_path(self, sample) -> str:
        img_path = osp.abspath(sample['img_path'])
        rel = osp.basename(img_path)
        for root in self.image_roots:
            if img_path.startswith(root.rstrip(os.sep) + os.sep):
                rel = osp.relpath(img_path, root)
                break
        stem = osp.splitext(rel)[0]
        if sample.get('sent_id') is not None:  # referring: one image, several sentences
            stem += f'_sent{sample["sent_id"]}'
        return osp.join(self.output_dir, stem + '.png')

    @staticmethod
    def _source(sample) -> str:
        sent = sample.get('sent_id')
        return sample['img_path'] + ('' if sent is None else f' (sentence {sent})')

    def process(self, data_batch, data_samples) -> None:
        from PIL import Image
        for sample in data_samples:
            out, src = self.output_path(sample), self._source(sample)
            other = self._sources.setdefault(out, src)
            if other != src:
                raise OutputCollisionError(
                    f'--out: {other} and {src} would both be written to {out}')
            data = sample['pred_sem_seg']['data']  # (1, H, W); squeeze() would drop 1 x 1
            label = data.reshape(data.shape[-2:]).cpu().numpy()
            if sample.get('reduce_zero_label', False):  # as mmseg's IoUMetric
                label = label + 1
            dtype = np.uint8 if label.max(initial=0) <= 255 else np.uint16
            os.makedirs(osp.dirname(out), exist_ok=True)
            Image.fromarray(label.astype(dtype)).save(out)
            self.results.append((out, src))

    def compute_metrics(self, results) -> dict:
        """Checks the pairs of all ranks (a rank only sees its own files while writing)."""
        seen = {}
        for out, src in results:
            other = seen.setdefault(out, src)
            if other != src:
                raise OutputCollisionError(
                    f'--out: {other} and {src} were both written to {out} (by different '
                    'processes; the file holds one of them)')
        print_log(f'{len(seen)} predicted label maps written to {self.output_dir}',
                  logger='current')
        return {}


def _image_roots(dataset) -> list:
    """``data_root/data_prefix.img_path`` of a dataset config (wrappers: their datasets)."""
    if dataset is None:
        return []
    if 'datasets' in dataset:  # ConcatDataset
        return [r for d in dataset['datasets'] for r in _image_roots(d)]
    if 'dataset' in dataset:  # RepeatDataset, ClassBalancedDataset, ...
        return _image_roots(dataset['dataset'])
    root = dataset.get('data_root') or ''
    prefix = (dataset.get('data_prefix') or {}).get('img_path') or ''
    return [osp.join(root, prefix)] if root or prefix else []


def add_prediction_writer(cfg, out: str) -> None:
    """``--out``: the evaluator's metrics write nothing (``output_dir`` dropped; a
    ``format_only`` metric, which only writes, is removed) and a :class:`PredictionWriter`
    writes the label maps."""
    evaluator = cfg.test_evaluator
    metrics = []
    for metric in _metric_cfgs(evaluator):
        metric = dict(metric)
        metric.pop('output_dir', None)
        if not metric.get('format_only', False):
            metrics.append(metric)
    roots = _image_roots(cfg.test_dataloader.get('dataset'))
    metrics.append(dict(type='OVSegPredictionWriter', output_dir=out, image_roots=roots))
    if isinstance(evaluator, dict) and 'metrics' in evaluator:
        evaluator['metrics'] = metrics
    else:
        cfg.test_evaluator = metrics


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
        add_prediction_writer(cfg, args.out)
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
