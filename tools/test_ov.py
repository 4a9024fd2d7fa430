"""Evaluate one COCO-trained open-vocabulary checkpoint on the five cross-dataset benchmarks.

    python tools/test_ov.py CONFIG CHECKPOINT [--benchmarks ade847 pc459 ade150 pc59 voc]
        [--data-root data] [--work-dir DIR] [--cfg-options ...] [--launcher pytorch]
    bash tools/dist_test_ov.sh CONFIG CHECKPOINT NUM_PROCS [args]

CONFIG is the training config of the checkpoint (``configs/san_vitb16_coco-stuff.py``,
``configs/san_vitl14_coco-stuff.py``, ``configs/zegclip_vitb16_coco-stuff-zs.py``, ...). Each
benchmark's data, label loading and metric come from SAN's cross-dataset configs
(``configs/san_vitb16_{ade-847,pc-459,ade-150,pc-59,voc}.py``: dataset, annotation loader,
``IoUMetric``, ``model.vocabulary``); the model, its test resolution (the resize steps of
CONFIG's test pipeline) and ``test_cfg`` (SAN: whole image; ZegCLIP: 512 sliding window) stay
CONFIG's. Only the vocabulary changes, as SAN's cross configs do with ``model.vocabulary``.
For ZegCLIP the seen/unseen split is dropped (``zero_shot_split=None``: every class of the
target vocabulary is scored alike, no seen-class calibration), as the official
``configs/cross_dataset/coco-to-*.py`` do (``novel_class = []``).

Benchmarks whose files are not under ``--data-root`` get one line naming the path that is
missing and a ``-`` in the table. The table (mIoU, SAN Table 1's column order) is printed
and written to ``<work-dir>/ov_results.json`` and ``ov_results.md`` by rank 0.
"""
import argparse
import copy
import json
import logging
import os
import os.path as osp
import sys
import tempfile
import time
from collections import OrderedDict

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if REPO_ROOT not in sys.path:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, REPO_ROOT)

from mmengine.config import Config, ConfigDict, DictAction  # noqa: E402
from mmengine.dist import get_rank  # noqa: E402
from mmengine.logging import print_log  # noqa: E402
from mmengine.runner import Runner  # noqa: E402

import mmseg_ovseg  # noqa: E402,F401  (fills registries, registers safe checkpoint globals)
from mmseg_ovseg.clip.vocabularies import get_vocabulary  # noqa: E402
from mmseg_ovseg.datasets.layout_check import check_dataset_layout, dataset_size  # noqa: E402
from mmseg_ovseg.utils import setup_cpu_distributed  # noqa: E402

# key -> (column, SAN cross-dataset config, validation images of the complete split)
BENCHMARKS = OrderedDict([
    ('ade847', ('A-847', 'san_vitb16_ade-847.py', 2000)),
    ('pc459', ('PC-459', 'san_vitb16_pc-459.py', 5105)),
    ('ade150', ('A-150', 'san_vitb16_ade-150.py', 2000)),
    ('pc59', ('PC-59', 'san_vitb16_pc-59.py', 5105)),
    ('voc', ('VOC', 'san_vitb16_voc.py', 1449)),
])
ANNOTATION_LOADERS = ('LoadAnnotations', 'LoadWideAnnotations')
TRAIN_ONLY_STEPS = ('ZeroShotLabelMapping', )


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Open-vocabulary cross-dataset evaluation (ADE-847, PC-459, ADE-150, '
        'PC-59, VOC) of one checkpoint')
    parser.add_argument('config', help="the checkpoint's (COCO training) config")
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--benchmarks', nargs='+', default=list(BENCHMARKS),
                        choices=list(BENCHMARKS), help='subset to run (default: all five)')
    parser.add_argument('--data-root', default='data',
                        help="folder holding the datasets (replaces the configs' leading "
                        "'data/'; default: data)")
    parser.add_argument('--bench-config-dir', default=osp.join(REPO_ROOT, 'configs'),
                        help='where the san_vitb16_<benchmark>.py configs are')
    parser.add_argument('--work-dir', help='logs and ov_results.{json,md} (default: '
                        'work_dirs/<config name>/ov)')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='overrides of CONFIG applied before each benchmark is set in, e.g. '
        'test_dataloader.num_workers=2')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    parser.add_argument('--debug', action='store_true',
                        help='on an error, print the full traceback (default: one line)')
    args = parser.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def _relocate(path: str, data_root: str) -> str:
    """``data/x`` -> ``<data_root>/x`` (other paths unchanged)."""
    norm = path.replace('\\', '/')
    if norm == 'data' or norm.startswith('data/'):
        return osp.join(data_root, norm[len('data/'):]) if norm != 'data' else data_root
    return path


def _find_step(pipeline, types):
    for i, step in enumerate(pipeline):
        if step.get('type') in types:
            return i
    return None


def benchmark_spec(key: str, bench_dir: str, data_root: str) -> dict:
    """Dataset config (without pipeline), annotation loader, evaluator and vocabulary of one
    benchmark, from its SAN cross-dataset config."""
    column, cfg_name, expected = BENCHMARKS[key]
    path = osp.join(bench_dir, cfg_name)
    if not osp.isfile(path):
        raise FileNotFoundError(f'benchmark config not found: {path}')
    bench = Config.fromfile(path)
    dataset = copy.deepcopy(bench.test_dataloader.dataset)
    pipeline = dataset.pop('pipeline')
    i = _find_step(pipeline, ANNOTATION_LOADERS)
    if i is None:
        raise KeyError(f'{path}: the test pipeline has no {ANNOTATION_LOADERS} step')
    dataset.data_root = _relocate(dataset.data_root, data_root)
    return dict(key=key, column=column, config=path, dataset=dataset,
                ann_loader=copy.deepcopy(pipeline[i]),
                evaluator=copy.deepcopy(bench.test_evaluator),
                vocabulary=bench.model.vocabulary, expected=expected)


def dataset_classes(dataset_cfg) -> int:
    """Number of classes the dataset's metric counts (metainfo override or the type's)."""
    meta = dataset_cfg.get('metainfo') or {}
    if meta.get('classes') is not None:
        return len(meta['classes'])
    from mmseg.registry import DATASETS
    return len(DATASETS.get(dataset_cfg['type']).METAINFO['classes'])


def benchmark_cfg(base: Config, spec: dict, checkpoint: str, work_dir: str):
    """``(cfg, info)``: CONFIG with the benchmark's data, label loader, metric and vocabulary
    set in, and the vocabulary name and class count for the results."""
    cfg = copy.deepcopy(base)
    model = cfg.model
    if 'vocabulary' not in model:
        raise KeyError(f'{model.get("type")} has no `vocabulary`: test_ov.py needs an '
                       'open-vocabulary segmentor (SAN, ZegCLIP, TextEncoderDecoder)')
    model.vocabulary = spec['vocabulary']
    if 'zero_shot_split' in model:  # ZegCLIP: the official cross-dataset configs
        model.zero_shot_split = None  # have no novel classes and no calibration
        model.self_training = False
    vocab_size = len(get_vocabulary(spec['vocabulary']))
    num_classes = dataset_classes(spec['dataset'])
    if vocab_size != num_classes:
        raise ValueError(f'{spec["column"]}: vocabulary {spec["vocabulary"]!r} has '
                         f'{vocab_size} names but the dataset counts {num_classes} classes')

    loader = cfg.test_dataloader
    pipeline = [copy.deepcopy(s) for s in loader.dataset.get('pipeline', cfg.get(
        'test_pipeline', [])) if s.get('type') not in TRAIN_ONLY_STEPS]
    i = _find_step(pipeline, ANNOTATION_LOADERS)
    if i is not None:
        pipeline[i] = copy.deepcopy(spec['ann_loader'])
    else:
        j = _find_step(pipeline, ('PackSegInputs', ))
        pipeline.insert(len(pipeline) if j is None else j, copy.deepcopy(spec['ann_loader']))
    dataset = copy.deepcopy(spec['dataset'])
    dataset.pipeline = pipeline
    meta = dataset.get('metainfo') or {}
    if dataset.get('type') == 'BaseSegDataset' and not isinstance(meta.get('classes'), str):
        # ADE-847 / PC-459: hundreds of placeholder names in the config take mmengine's
        # config printer (yapf) seconds per dump, 4 dumps per Runner. The class names go
        # to a file instead (mmengine reads a str metainfo value as a list file); they are the
        # vocabulary's names, so the per-class table is readable. BaseSegDataset has no
        # classes of its own, so this changes no label mapping.
        names = list(get_vocabulary(spec['vocabulary']))
        path = osp.join(work_dir, spec['key'], 'classes.txt')
        _write_lines_atomic(path, names)
        dataset.metainfo = dict(meta, classes=path)
    loader.dataset = dataset
    loader.sampler = ConfigDict(type='DefaultSampler', shuffle=False)
    cfg.test_evaluator = copy.deepcopy(spec['evaluator'])
    cfg.test_cfg = cfg.get('test_cfg') or ConfigDict(type='TestLoop')
    cfg.work_dir = osp.join(work_dir, spec['key'])
    cfg.load_from = checkpoint
    cfg.resume = False
    # unique per benchmark: mmengine names its logger and visualizer instances after it
    cfg.experiment_name = f'ov_{spec["key"]}_{time.strftime("%Y%m%d_%H%M%S")}'
    return cfg, dict(vocabulary=spec['vocabulary'], num_classes=num_classes)


def _write_lines_atomic(path: str, lines) -> None:
    """Every rank may write the same file: each writes a temporary and renames it."""
    os.makedirs(osp.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix='.tmp_', dir=osp.dirname(path))
    with os.fdopen(fd, 'w') as f:
        f.writelines(line + '\n' for line in lines)
    os.replace(tmp, path)


def format_markdown(name: str, results: dict) -> str:
    cols = [BENCHMARKS[k][0] for k in BENCHMARKS]
    row = []
    for key in BENCHMARKS:
        res = results.get(key)
        row.append(f'{res["mIoU"]:.2f}' if res and res.get('mIoU') is not None else '-')
    return '\n'.join([
        '| model | ' + ' | '.join(cols) + ' |',
        '|---|' + '---:|' * len(cols),
        f'| {name} | ' + ' | '.join(row) + ' |',
    ]) + '\n'


def main(argv=None):
    args = parse_args(argv)
    for what, path in (('config', args.config), ('checkpoint', args.checkpoint)):
        if not osp.isfile(path):
            raise FileNotFoundError(f'{what} file not found: {path}')
    base = Config.fromfile(args.config)
    if args.cfg_options is not None:
        base.merge_from_dict(args.cfg_options)
    base.launcher = args.launcher
    name = osp.splitext(osp.basename(args.config))[0]
    work_dir = args.work_dir or osp.join('./work_dirs', name, 'ov')

    results = OrderedDict()
    cpu_dist = False
    for key in BENCHMARKS:
        if key not in args.benchmarks:
            continue
        spec = benchmark_spec(key, args.bench_config_dir, args.data_root)
        column = spec['column']
        problems = check_dataset_layout(spec['dataset'])
        if problems:
            msg = '; '.join(problems)
            print_log(f'{column}: skipped, dataset not found - {msg}', logger='current',
                      level=logging.WARNING)
            results[key] = dict(mIoU=None, missing=msg)
            continue
        n = dataset_size(spec['dataset'])
        if n is not None and n != spec['expected']:
            print_log(f'{column}: {n} images, the complete validation split has '
                      f'{spec["expected"]}: the number is not comparable to the papers\'',
                      logger='current', level=logging.WARNING)
        cfg, info = benchmark_cfg(base, spec, args.checkpoint, work_dir)
        cpu_dist = setup_cpu_distributed(cfg) or cpu_dist
        if cpu_dist and cfg.get('model_wrapper_cfg') is None:
            cfg.model_wrapper_cfg = dict(type='CPUDistributedDataParallel',
                                         broadcast_buffers=False, find_unused_parameters=False)
        runner = Runner.from_cfg(cfg)
        metrics = runner.test()
        miou = metrics.get('mIoU')
        results[key] = dict(mIoU=None if miou is None else float(miou), images=n,
                            metrics={k: float(v) for k, v in metrics.items()
                                     if isinstance(v, (int, float))}, **info)
        print_log(f'{column}: mIoU {miou}', logger='current')

    if get_rank() == 0:
        write_summary(args, work_dir, results, format_markdown(name, results))
    return results


def write_summary(args, work_dir: str, results: dict, table: str) -> None:
    """``ov_results.json`` and ``ov_results.md`` in ``work_dir``; the table and the missing
    benchmarks printed."""
    os.makedirs(work_dir, exist_ok=True)
    summary = OrderedDict(
        config=args.config, checkpoint=args.checkpoint, data_root=args.data_root,
        columns=[BENCHMARKS[k][0] for k in BENCHMARKS],
        results=OrderedDict((BENCHMARKS[k][0], v) for k, v in results.items()))
    with open(osp.join(work_dir, 'ov_results.json'), 'w') as f:
        json.dump(summary, f, indent=2)
    with open(osp.join(work_dir, 'ov_results.md'), 'w') as f:
        f.write(table)
    for key, res in results.items():
        if res.get('missing'):
            print(f'{BENCHMARKS[key][0]}: missing - {res["missing"]}')
    print(table, end='')
    print(f'written: {osp.join(work_dir, "ov_results.json")}, '
          f'{osp.join(work_dir, "ov_results.md")}')


if __name__ == '__main__':
    from mmseg_ovseg.utils.cli import run_cli  # one-line errors; closes the process group
    sys.exit(run_cli(main, 'test_ov.py'))
