"""Inference latency and peak memory of a segmentor, optionally side by side with a reference.

    python tools/analysis_tools/benchmark.py CONFIG [--checkpoint CKPT] [--shape 512 512]
        [--warmup 3] [--runs 10] [--threads 2] [--bf16] [--mode predict|tensor]
        [--reference-config REF_CONFIG [--reference-checkpoint CKPT]] [--out result.json]

    # our SAN (float32 and bf16 autocast) against mmsegmentation's own SAN, same weights:
    python tools/analysis_tools/benchmark.py --against-mmseg-san [--shape 640 640] [--threads 2]
        [--runs 7] [--warmup 1] [--vocabulary coco_stuff171] [--tiny] [--out result.json]

    # the kernels behind SAN's CPU speed, each against PyTorch's default, at SAN's shapes:
    python tools/analysis_tools/benchmark.py --kernels [--threads 2] [--runs 20] [--tiny]
        [--out result.json]

    # GEMM throughput per precision (fp32, oneDNN prepacked fp32, bf16, fp16) at SAN's shapes:
    # whether bf16 can be faster than fp32 on this machine at all
    python tools/analysis_tools/benchmark.py --gemm [--threads 2] [--runs 20] [--tiny]
        [--out result.json]

    # tools/infer.py on one large image: time and peak RSS, mmseg's one-window slide path and
    # visualizer vs batched windows (+ prediction only), each in a fresh process:
    python tools/analysis_tools/benchmark.py CONFIG --large-image [--shape 3000 4000]
        [--full-resolution] [--slide H_CROP W_CROP H_STRIDE W_STRIDE] [--batch-windows N]
        [--runs 1] [--threads 2]

Every model runs on the same input tensor (already normalised, batch 1 unless ``--batch``),
``--warmup`` untimed runs of every model first, then per model one memory run and ``--runs``
timed runs. Reported per model: median/min/mean latency, torch threads, peak memory of the
memory run above the level before it (CPU: resident set size sampled from
``/proc/self/statm`` by a thread after freed heap memory is returned to the OS with
``malloc_trim``; CUDA: ``torch.cuda.max_memory_allocated``) and, with a reference,
``ratio = median(model) / median(reference)``.

Other code can time any callables with :func:`benchmark_models`, e.g. to add mmseg's own SAN
as a reference::

    sys.path.insert(0, 'tools/analysis_tools')  # tools/ is not a package
    from benchmark import benchmark_models, build_segmentor, predict_fn

The pieces live in the sibling package ``benchmarking/`` (timing and memory, segmentors,
the SAN and kernel comparisons, large images); this script is the command line.
"""
import argparse
import json
import os
import os.path as osp
import sys

HERE = osp.dirname(osp.abspath(__file__))
REPO_ROOT = osp.dirname(osp.dirname(HERE))
for _path in (REPO_ROOT, HERE):  # run from a checkout without `pip install -e .`; benchmarking/
    if _path not in sys.path:
        sys.path.insert(0, _path)

import torch  # noqa: E402
from benchmarking import (  # noqa: E402,F401  (re-exported: `from benchmark import ...`)
    LARGE_IMAGE_VARIANTS,
    SAN_BF16_ARGMAX_AGREEMENT,
    SAN_FP32_TOL,
    SAN_GEMM_SHAPES,
    against_mmseg_san,
    benchmark_models,
    build_segmentor,
    gemm_rates,
    interleaved_rounds,
    kernel_comparison,
    large_image,
    large_image_worker,
    markdown_rows,
    predict_fn,
)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Benchmark segmentor inference')
    parser.add_argument('config', nargs='?', help='model config')
    parser.add_argument('--against-mmseg-san', action='store_true',
                        help="time our SAN (fp32 and bf16) against mmseg's SAN, same weights")
    parser.add_argument('--kernels', action='store_true',
                        help="time our attention/linear kernels against PyTorch's defaults")
    parser.add_argument('--gemm', action='store_true',
                        help='GEMM GFLOP/s in fp32, bf16 and fp16 at SAN\'s linear shapes')
    parser.add_argument('--tiny', action='store_true',
                        help='--against-mmseg-san, --kernels or --gemm at tiny sizes (smoke test)')
    parser.add_argument('--vocabulary', default='coco_stuff171',
                        help='--against-mmseg-san vocabulary (any get_vocabulary spec)')
    parser.add_argument('--checkpoint', default=None)
    parser.add_argument('--reference-config', default=None,
                        help='a second config timed in the same process on the same input')
    parser.add_argument('--reference-checkpoint', default=None)
    parser.add_argument('--shape', type=int, nargs=2, default=None, metavar=('H', 'W'),
                        help='input size (default 512 512; 640 640 with --against-mmseg-san)')
    parser.add_argument('--batch', type=int, default=1)
    parser.add_argument('--warmup', type=int, default=3)
    parser.add_argument('--runs', type=int, default=10)
    parser.add_argument('--threads', type=int, default=None,
                        help='torch.set_num_threads (default: torch default)')
    parser.add_argument('--bf16', action='store_true', help='bfloat16 autocast')
    parser.add_argument('--mode', choices=['predict', 'tensor'], default='predict')
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--out', default=None, help='write the results as JSON')
    parser.add_argument('--large-image', action='store_true',
                        help='memory and time of tools/infer.py on one large image (--shape, '
                        'default 3000 4000): mmseg one-window path vs batched windows, each '
                        'variant in a fresh process')
    parser.add_argument('--slide', type=int, nargs=4, default=None,
                        metavar=('H_CROP', 'W_CROP', 'H_STRIDE', 'W_STRIDE'),
                        help='--large-image: slide inference with this window and stride')
    parser.add_argument('--batch-windows', type=int, default=None,
                        help='--large-image: test_cfg.batch_windows (default: the code default)')
    parser.add_argument('--full-resolution', action='store_true',
                        help='--large-image: no Resize in the test pipeline')
    parser.add_argument('--large-image-worker', default=None, help=argparse.SUPPRESS)
    parser.add_argument('--debug', action='store_true',
                        help='on an error, print the full traceback (default: one line)')
    args = parser.parse_args(argv)
    if args.large_image_worker:
        return args
    if args.config is None and not (args.against_mmseg_san or args.kernels or args.gemm):
        parser.error('a CONFIG is required (or --against-mmseg-san, --kernels or --gemm)')
    if args.shape is None:
        args.shape = [640, 640] if args.against_mmseg_san else [512, 512]
        if args.large_image:
            args.shape = [3000, 4000]
    return args


def _write_json(path: str, report: dict) -> None:
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    with open(path, 'w') as f:
        json.dump(report, f, indent=2)
    print(f'results written to {path}')


def main(argv=None):
    args = parse_args(argv)
    if args.large_image_worker:  # one --large-image variant, in a fresh process
        print(json.dumps(large_image_worker(json.loads(args.large_image_worker))))
        return None
    if args.large_image:
        report = large_image(args)
        if args.out:
            _write_json(args.out, dict(torch=torch.__version__, **report))
        return report
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    if args.kernels or args.gemm:
        report = kernel_comparison(args) if args.kernels else gemm_rates(args)
        if args.out:
            _write_json(args.out, dict(torch=torch.__version__, **report))
        return report
    if args.against_mmseg_san:
        report = against_mmseg_san(args)
        if args.out:
            _write_json(args.out, dict(torch=torch.__version__, **report))
        if not report['checks']['ok']:
            sys.exit(1)
        return report
    models = {}
    name = osp.splitext(osp.basename(args.config))[0]
    ref_name = None
    if args.reference_config:
        ref_name = 'reference:' + osp.splitext(osp.basename(args.reference_config))[0]
        ref = build_segmentor(args.reference_config, args.reference_checkpoint, args.device)
        models[ref_name] = predict_fn(ref, args.mode)
    models[name] = predict_fn(build_segmentor(args.config, args.checkpoint, args.device),
                              args.mode)
    inputs = torch.randn(args.batch, 3, *args.shape, device=args.device)
    results = benchmark_models(models, inputs, args.warmup, args.runs, args.bf16, args.device)
    if ref_name:
        for r in results.values():
            r['ratio_to_reference'] = r['median_ms'] / results[ref_name]['median_ms']
    print(markdown_rows(results, [args.batch, 3, *args.shape], ref_name))
    if args.out:
        report = dict(config=args.config, checkpoint=args.checkpoint,
                      reference_config=args.reference_config,
                      input_shape=[args.batch, 3, *args.shape], mode=args.mode,
                      torch=torch.__version__, results=results)
        _write_json(args.out, report)
    return results


if __name__ == '__main__':
    from mmseg_ovseg.utils.cli import run_cli
    sys.exit(run_cli(main, 'benchmark.py'))
