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
    fns = {'ours': predict_fn(build_segmentor(cfg_a)), 'mmseg': predict_fn(build_segmentor(cfg_b))}
    results = benchmark_models(fns, torch.randn(1, 3, 512, 512), warmup=3, runs=10)
"""
import argparse
import ctypes
import gc
import json
import os
import os.path as osp
import resource
import statistics
import sys
import threading
import time
from contextlib import nullcontext
from typing import Callable, Dict, List, Optional, Sequence, Tuple

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if REPO_ROOT not in sys.path:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, REPO_ROOT)

import torch  # noqa: E402

_PAGE = os.sysconf('SC_PAGE_SIZE') if hasattr(os, 'sysconf') else 4096


# ------------------------------------------------------------------ memory
def _release_free_memory() -> None:
    """Give memory freed by earlier runs back to the OS, so the next RSS peak is its own."""
    gc.collect()
    try:
        ctypes.CDLL('libc.so.6').malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def _current_rss() -> Optional[int]:
    """Resident set size of this process in bytes (Linux ``/proc``), or None."""
    try:
        with open('/proc/self/statm') as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return None


class _PeakRSS:
    """Highest RSS seen while the block runs, sampled every ``interval`` seconds.

    The process-wide ``ru_maxrss`` cannot be reset, so after a bigger model has run it would
    hide a smaller one's peak; sampling the current RSS measures each model on its own.
    Falls back to the ``ru_maxrss`` delta where ``/proc`` is missing.
    """

    def __init__(self, interval: float = 0.002):
        self.interval = interval
        self.base = self.peak = None
        self._stop = threading.Event()

    def _sample(self):
        while not self._stop.is_set():
            rss = _current_rss()
            if rss is not None and rss > self.peak:
                self.peak = rss
            self._stop.wait(self.interval)

    def __enter__(self):
        self.base = _current_rss()
        if self.base is None:
            self.base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
            self._thread = None
        else:
            self.peak = self.base
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        if self._thread is None:
            self.peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        else:
            self._stop.set()
            self._thread.join()
            rss = _current_rss()
            self.peak = max(self.peak, rss or 0)

    @property
    def delta_mb(self) -> float:
        return max(self.peak - self.base, 0) / 2**20


# ------------------------------------------------------------------ timing
def benchmark_models(models: Dict[str, Callable],
                     inputs,
                     warmup: int = 3,
                     runs: int = 10,
                     bf16: bool = False,
                     device: Optional[str] = None) -> Dict[str, dict]:
    """Time each callable on the same inputs, one model after the other.

    Args:
        models: ``{name: fn}``; ``fn(inputs)`` runs one inference (the first entry is the
            reference when ``ratio`` is read off the results).
        inputs: passed unchanged to every ``fn``.
        warmup: untimed runs of every model before any is measured (allocator, lazy init,
            text-embedding caches).
        runs: timed runs.
        bf16: run under ``torch.autocast(dtype=torch.bfloat16)``.
        device: ``'cpu'``/``'cuda'``: where to synchronise and read memory; default: the
            device of ``inputs`` if it is a tensor, else CPU.

    Returns:
        ``{name: dict(median_ms, min_ms, mean_ms, runs, warmup, threads, bf16, device,
        peak_mem_mb, mem_kind)}``.
    """
    if runs < 1:
        raise ValueError(f'runs must be >= 1, got {runs}')
    if device is None:
        device = inputs.device.type if isinstance(inputs, torch.Tensor) else 'cpu'
    device_type = torch.device(device).type
    cuda = device_type == 'cuda'

    def sync():
        if cuda:
            torch.cuda.synchronize()

    def autocast():
        return (torch.autocast(device_type, dtype=torch.bfloat16) if bf16 else
                nullcontext())

    # Warm every model up first, so process-wide one-time costs (thread pools, kernel
    # caches) are not charged to whichever model happens to run first.
    with torch.no_grad(), autocast():
        for fn in models.values():
            for _ in range(warmup):
                fn(inputs)
        sync()

    results = {}
    for name, fn in models.items():
        with torch.no_grad(), autocast():
            # Peak memory of one steady-state run, read apart from the timed runs so the
            # sampling thread does not disturb them.
            if cuda:
                torch.cuda.reset_peak_memory_stats()
                mem_base = torch.cuda.memory_allocated()
                fn(inputs)
                sync()
                mem_mb = (torch.cuda.max_memory_allocated() - mem_base) / 2**20
                mem_kind = 'cuda max_memory_allocated delta'
            else:
                _release_free_memory()
                with _PeakRSS() as peak:
                    fn(inputs)
                mem_mb = peak.delta_mb
                mem_kind = 'peak RSS delta'
            times = []
            for _ in range(runs):
                start = time.perf_counter()
                fn(inputs)
                sync()
                times.append((time.perf_counter() - start) * 1000)
        results[name] = dict(
            median_ms=statistics.median(times), min_ms=min(times),
            mean_ms=statistics.fmean(times), runs=runs, warmup=warmup,
            threads=torch.get_num_threads(), bf16=bf16, device=device,
            peak_mem_mb=mem_mb, mem_kind=mem_kind)
    return results


def interleaved_rounds(models: Dict[str, Tuple[Callable, bool]], inputs, rounds: int,
                       device: Optional[str] = None) -> Dict[str, List[float]]:
    """Time ``rounds`` rounds in which every model runs once, the order rotated each round.

    On a shared machine the load changes over seconds; the ratio of two models *within* a
    round is much steadier than the ratio of medians taken minutes apart.

    Args:
        models: ``{name: (fn, bf16)}``; ``bf16`` runs that model under bfloat16 autocast.
        inputs: passed unchanged to every ``fn``.
        rounds: number of rounds.

    Returns:
        ``{name: [seconds per round]}``.
    """
    if device is None:
        device = inputs.device.type if isinstance(inputs, torch.Tensor) else 'cpu'
    device_type = torch.device(device).type
    names = list(models)
    times = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            fn, bf16 = models[name]
            ctx = torch.autocast(device_type, dtype=torch.bfloat16) if bf16 else nullcontext()
            with torch.no_grad(), ctx:
                start = time.perf_counter()
                fn(inputs)
                if device_type == 'cuda':
                    torch.cuda.synchronize()
                times[name].append(time.perf_counter() - start)
    return times


# --------------------------------------------------------- model building
def build_segmentor(config, checkpoint: Optional[str] = None, device: str = 'cpu',
                    cfg_options: Optional[dict] = None):
    """Build the config's segmentor in eval mode (weights from ``checkpoint`` if given)."""
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS

    import mmseg_ovseg  # noqa: F401  (registries, safe checkpoint globals)
    from mmseg_ovseg.utils.dist import check_device
    from mmseg_ovseg.utils.load_guard import load_checkpoint_checked, resolve_checkpoint_path
    check_device(device)
    if isinstance(config, str) and not osp.isfile(config):
        raise FileNotFoundError(f'config file not found: {config}')
    cfg = Config.fromfile(config) if isinstance(config, str) else config
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    if checkpoint is not None:
        checkpoint = resolve_checkpoint_path(checkpoint)
    cfg.model.train_cfg = None
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    model = MODELS.build(cfg.model)
    if checkpoint is not None:  # must fit the model, finite weights (load_guard)
        load_checkpoint_checked(model, checkpoint, map_location='cpu')
    return model.to(device).eval()


def predict_fn(model, mode: str = 'predict') -> Callable:
    """``fn(inputs)`` for :func:`benchmark_models`: ``inputs`` is a normalised (B, 3, H, W).

    ``'predict'`` times the whole test-time path (slide/whole inference, resize to the input
    size, argmax); ``'tensor'`` times ``model._forward`` (raw head outputs).
    """
    if mode == 'tensor':
        return lambda inputs: model._forward(inputs)
    if mode != 'predict':
        raise ValueError(f"mode must be 'predict' or 'tensor', got {mode!r}")
    from mmseg.structures import SegDataSample

    def fn(inputs):
        h, w = inputs.shape[-2:]
        samples = [
            SegDataSample(metainfo=dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w),
                                        padding_size=[0, 0, 0, 0]))
            for _ in range(inputs.shape[0])
        ]
        return model.predict(inputs, samples)

    return fn


def markdown_rows(results: Dict[str, dict], shape: Sequence[int],
                  reference: Optional[str] = None) -> str:
    lines = ['| model | input | threads | bf16 | median ms | min ms | peak mem MB | ratio |',
             '|---|---|---|---|---|---|---|---|']
    ref = results[reference]['median_ms'] if reference else None
    for name, r in results.items():
        ratio = f'{r["median_ms"] / ref:.2f}' if ref else '-'
        lines.append(f'| {name} | {"x".join(map(str, shape))} | {r["threads"]} | '
                     f'{r["bf16"]} | {r["median_ms"]:.1f} | {r["min_ms"]:.1f} | '
                     f'{r["peak_mem_mb"]:.1f} | {ratio} |')
    return '\n'.join(lines)


# ------------------------------------------------- our SAN against mmseg's SAN
# Parity and quality limits the comparison enforces (exit status 1 when not met).
SAN_FP32_TOL = 1e-4  # max |seg_logits difference| in float32
SAN_BF16_ARGMAX_AGREEMENT = 0.995  # fraction of pixels whose bf16 argmax equals float32's


def against_mmseg_san(args) -> dict:
    """Our SAN (float32 and bf16 autocast) against mmseg 1.2.2's SAN with the same weights.

    mmseg's SAN is built from a random state (ViT-B/16, or tiny widths with ``--tiny``), its
    weights are converted to ours with ``tools/model_converters/mmseg_san2ovseg.py``, and all
    three run ``predict`` (whole inference, argmax) on the same input with the same threads:
    first one model after the other (median, min, peak memory), then in interleaved rounds
    (per-round ratios). The float32 scores must agree within ``SAN_FP32_TOL`` and the bf16
    argmax with float32's on ``SAN_BF16_ARGMAX_AGREEMENT`` of the pixels.
    """
    import tempfile

    import mmseg_san_reference as ref

    from mmseg_ovseg.clip.vocabularies import get_vocabulary
    classes = get_vocabulary(args.vocabulary)
    if args.tiny:
        mmseg_cfg, ours_cfg = ref.tiny_mmseg_san_cfg(classes), ref.tiny_ours_cfg()
    else:
        mmseg_cfg, ours_cfg = ref.mmseg_san_cfg(classes=classes), ref.ours_vitb16_cfg()
    mmseg_model = ref.build_mmseg_san(mmseg_cfg, seed=args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        ours = ref.convert_and_load(mmseg_model, ours_cfg, tmp, classes)
    torch.manual_seed(args.seed + 1)
    x = torch.randn(args.batch, 3, *args.shape)
    fn_ref, fn_ours = predict_fn(mmseg_model), predict_fn(ours)
    res = benchmark_models({'mmseg SAN': fn_ref, 'ours fp32': fn_ours}, x, args.warmup,
                           args.runs)
    res.update(benchmark_models({'ours bf16': fn_ours}, x, args.warmup, args.runs, bf16=True))
    rounds = interleaved_rounds({'mmseg SAN': (fn_ref, False), 'ours fp32': (fn_ours, False),
                                 'ours bf16': (fn_ours, True)}, x, args.runs)
    base = res['mmseg SAN']['median_ms']
    for name, r in res.items():
        r['ratio'] = r['median_ms'] / base
        r['interleaved_s'] = rounds[name]
        per_round = [a / b for a, b in zip(rounds[name], rounds['mmseg SAN'])]
        r['interleaved_ratios'] = per_round
        r['interleaved_ratio'] = statistics.median(per_round)
    with torch.no_grad():  # the timed path's outputs
        out_ref, out = fn_ref(x), fn_ours(x)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            out16 = fn_ours(x)
    diff = max((o.seg_logits.data.float() - r.seg_logits.data).abs().max().item()
               for o, r in zip(out, out_ref))
    same = statistics.fmean((o.pred_sem_seg.data == r.pred_sem_seg.data).float().mean().item()
                            for o, r in zip(out, out_ref))
    same16 = statistics.fmean((a.pred_sem_seg.data == b.pred_sem_seg.data).float().mean().item()
                              for a, b in zip(out16, out))
    # A tiny random SAN predicts nearly constant maps whose top classes can tie to within
    # bf16 rounding, flipping all pixels at once: there only float32 parity is enforced.
    checks = dict(fp32_max_abs_diff=diff, fp32_argmax_agreement=same,
                  bf16_argmax_agreement=same16,
                  ok=diff < SAN_FP32_TOL and (args.tiny or same16 >= SAN_BF16_ARGMAX_AGREEMENT))
    name = 'tiny (bf16 agreement not enforced)' if args.tiny else 'ViT-B/16'
    print(f'SAN {name}, input {tuple(x.shape)}, '
          f'{len(classes)} classes (text cached), threads {torch.get_num_threads()}, '
          f'warmup {args.warmup}, runs/rounds {args.runs}')
    print('| model | median s | min s | ratio (one after the other) | '
          'interleaved per-round ratio: median (range) | peak mem MB |')
    print('|---|---|---|---|---|---|')
    for name, r in res.items():
        lo, hi = min(r['interleaved_ratios']), max(r['interleaved_ratios'])
        print(f'| {name} | {r["median_ms"] / 1000:.3f} | {r["min_ms"] / 1000:.3f} | '
              f'{r["ratio"]:.3f} | {r["interleaved_ratio"]:.3f} ({lo:.2f}-{hi:.2f}) | '
              f'{r["peak_mem_mb"]:.0f} |')
    print(f'float32: max |seg_logits diff| {diff:.2e}, argmax equal on {100 * same:.3f}% '
          f'of pixels; bf16: argmax equal to float32 on {100 * same16:.3f}% of pixels')
    if not checks['ok']:
        print(f'FAILED: float32 diff must be < {SAN_FP32_TOL} and bf16 argmax agreement >= '
              f'{SAN_BF16_ARGMAX_AGREEMENT}', file=sys.stderr)
    return dict(results=res, checks=checks, input_shape=list(x.shape),
                num_classes=len(classes), tiny=args.tiny)


# ------------------------------------------------- kernels against PyTorch's defaults
def kernel_comparison(args) -> dict:
    """Our CPU kernels against the PyTorch op they replace, at SAN ViT-B/16's shapes.

    - bf16 attention: :func:`mmseg_ovseg.models.attention.blocked_attention` against
      ``scaled_dot_product_attention`` (side adapter: 1700 tokens, 6 heads of 40; CLIP at half
      scale: 401 tokens, 12 heads of 64);
    - float32 linear: ``torch.ops.mkldnn._linear_pointwise`` on a weight reordered once (what
      ``CLIPVisionTransformer._linear`` runs in float32 inference) against ``F.linear``
      (CLIP ViT-B's MLP and qkv at 401 tokens).

    Each pair runs in ``--runs`` interleaved rounds; reported: medians, the median per-round
    ratio (ours / PyTorch's) and the max |difference| of the outputs.
    """
    import torch.nn.functional as F

    from mmseg_ovseg.models.attention import blocked_attention
    div = 8 if args.tiny else 1
    g = torch.Generator().manual_seed(args.seed)

    def attn_case(n, heads, dim):
        q, k, v = (torch.randn(1, heads, n // div, dim, generator=g).bfloat16()
                   for _ in range(3))
        return (lambda: F.scaled_dot_product_attention(q, k, v),
                lambda: blocked_attention(q, k, v))

    def linear_case(n, c_in, c_out):
        x = torch.randn(n // div, c_in // div, generator=g)
        w = torch.randn(c_out // div, c_in // div, generator=g) * c_in**-0.5
        b = torch.randn(c_out // div, generator=g)
        packed = torch.ops.mkldnn._reorder_linear_weight(w, None)
        return (lambda: F.linear(x, w, b),
                lambda: torch.ops.mkldnn._linear_pointwise(x, packed, b, 'none', [], ''))

    cases = {
        'attention bf16, side adapter (1700 tok, 6x40)': attn_case(1700, 6, 40),
        'attention bf16, CLIP ViT-B/16 @320 (401 tok, 12x64)': attn_case(401, 12, 64),
        'linear fp32, CLIP MLP c_fc (401 x 768 -> 3072)': linear_case(401, 768, 3072),
        'linear fp32, CLIP qkv (401 x 768 -> 2304)': linear_case(401, 768, 2304),
    }
    report = {}
    print(f'threads {torch.get_num_threads()}, {args.runs} interleaved rounds'
          f'{" (tiny shapes)" if args.tiny else ""}')
    print('| kernel | PyTorch ms | ours ms | ratio (per-round median) | max abs diff |')
    print('|---|---|---|---|---|')
    with torch.no_grad():
        for name, (base, ours) in cases.items():
            diff = (ours().float() - base().float()).abs().max().item()
            times = interleaved_rounds({'base': (lambda _: base(), False),
                                        'ours': (lambda _: ours(), False)}, None, args.runs,
                                       device='cpu')
            ratio = statistics.median(a / b for a, b in zip(times['ours'], times['base']))
            row = dict(base_ms=1000 * statistics.median(times['base']),
                       ours_ms=1000 * statistics.median(times['ours']), ratio=ratio,
                       max_abs_diff=diff)
            report[name] = row
            print(f'| {name} | {row["base_ms"]:.2f} | {row["ours_ms"]:.2f} | {ratio:.3f} | '
                  f'{diff:.2e} |')
    return dict(kernels=report, tiny=args.tiny)


# ------------------------------------------------------------ large images (CLI path)
#: --large-image variants: test_cfg overrides, and whether mmseg's own code replaces ours (the
#: CLI before batched windows and apis/draw.py: EncoderDecoder.slide_inference one window at a
#: time, BaseSegmentor.postprocess_result, SegLocalVisualizer for the overlay).
LARGE_IMAGE_VARIANTS = {
    'mmseg (1 window, logits)': (dict(keep_logits=True), True),
    'batched (logits)': (dict(keep_logits=True), False),
    'batched (prediction only)': (dict(keep_logits=False), False),
}


def large_image_worker(spec: dict) -> dict:
    """One ``tools/infer.py``-like run in this process: build the inferencer, segment the
    image, write the label PNG and the overlay; time and peak RSS of each stage."""
    import types

    import numpy as np
    from mmseg.models.segmentors import BaseSegmentor, EncoderDecoder
    from PIL import Image

    from mmseg_ovseg.apis import OpenVocabInferencer
    torch.set_num_threads(spec['threads'])
    overrides, use_mmseg = LARGE_IMAGE_VARIANTS[spec['variant']]
    test_cfg = dict(spec['test_cfg'], **overrides)
    cfg_options = {'model.test_cfg': test_cfg}
    if spec['full_resolution']:  # no Resize: the model sees the image at its own size
        cfg_options['test_pipeline'] = [dict(type='LoadImageFromFile'),
                                        dict(type='PackSegInputs')]
    stages = {}

    def stage(name, fn):
        _release_free_memory()
        start = time.perf_counter()
        with _PeakRSS() as peak:
            out = fn()
        stages[name] = dict(seconds=round(time.perf_counter() - start, 3),
                            peak_rss_mb=round(peak.peak / 2**20, 1))
        return out

    torch.manual_seed(0)
    inferencer = stage('build', lambda: OpenVocabInferencer(
        spec['config'], spec['checkpoint'], device='cpu', cfg_options=cfg_options))
    model = inferencer.model
    if use_mmseg:
        model.slide_inference = types.MethodType(EncoderDecoder.slide_inference, model)
        model.postprocess_result = types.MethodType(BaseSegmentor.postprocess_result, model)
    sample = stage('inference', lambda: inferencer(spec['image'])[0])
    out_dir = spec['out_dir']

    def save_label():  # as tools/infer.py
        label = sample.pred_sem_seg.data[0].cpu().numpy()
        dtype = np.uint8 if label.max(initial=0) < 256 else np.uint16
        Image.fromarray(label.astype(dtype)).save(osp.join(out_dir, 'label.png'))
        return label

    label = stage('label', save_label)
    overlay_file = osp.join(out_dir, 'overlay.png')
    if use_mmseg:
        stage('overlay', lambda: _mmseg_overlay(inferencer, spec['image'], sample, overlay_file))
    else:
        stage('overlay', lambda: inferencer.visualize(spec['image'], sample, overlay_file))
    return dict(variant=spec['variant'], test_cfg=test_cfg, stages=stages,
                seconds=round(sum(s['seconds'] for s in stages.values()), 3),
                peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                has_logits='seg_logits' in sample, label_digest=_digest(label))


def _mmseg_overlay(inferencer, image: str, sample, out_file: str) -> None:
    """The overlay as OpenVocabInferencer.visualize drew it before apis/draw.py: mmseg's
    SegLocalVisualizer (with_labels) through its matplotlib canvas, plus our legend."""
    import mmcv
    import numpy as np
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    from mmseg.visualization import SegLocalVisualizer

    from mmseg_ovseg.apis.inferencer import draw_legend
    rgb = mmcv.bgr2rgb(inferencer.read_image(image))
    meta = inferencer.model.dataset_meta
    vis = SegLocalVisualizer(name=f'benchmark_large_image_{id(sample)}', alpha=0.5)
    vis.dataset_meta = dict(classes=meta['classes'], palette=meta['palette'])
    label_map = sample.pred_sem_seg.data.cpu().numpy()
    vis.add_datasample('prediction', rgb, SegDataSample(pred_sem_seg=PixelData(data=label_map)),
                       draw_gt=False, draw_pred=True, show=False, with_labels=True)
    drawn = vis.get_image()
    labels = [int(i) for i in np.unique(label_map) if i < len(meta['classes'])]
    drawn = draw_legend(drawn, labels, meta['classes'], meta['palette'])
    mmcv.imwrite(mmcv.rgb2bgr(drawn), out_file)


def _digest(array) -> str:
    import hashlib
    return hashlib.sha1(array.tobytes()).hexdigest()[:12]


def large_image(args) -> dict:
    """The CLI's memory and time on one large image, each variant in a fresh process.

    Peak RSS is the process's ``ru_maxrss`` (build, inference, label PNG and overlay, as
    ``tools/infer.py`` does them); the variants run ``--runs`` rounds in rotated order, so the
    machine's load falls on all of them alike.
    """
    import subprocess
    import tempfile

    import cv2
    import numpy as np
    from mmengine.config import Config
    cfg = Config.fromfile(args.config)
    test_cfg = dict(cfg.model.get('test_cfg') or dict(mode='whole'))
    if args.slide:
        h_crop, w_crop, h_stride, w_stride = args.slide
        test_cfg = dict(mode='slide', crop_size=(h_crop, w_crop), stride=(h_stride, w_stride))
    if args.batch_windows:
        test_cfg['batch_windows'] = args.batch_windows
    height, width = args.shape
    tmp = tempfile.mkdtemp(prefix='ovseg_large_image_')
    image = osp.join(tmp, f'image_{width}x{height}.jpg')
    rng = np.random.RandomState(args.seed)
    # smooth colour blobs (a photo-like JPEG of a realistic size), not white noise
    small = rng.randint(0, 256, (max(height // 64, 2), max(width // 64, 2), 3), np.uint8)
    cv2.imwrite(image, cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC))
    variants = list(LARGE_IMAGE_VARIANTS)
    results = {name: [] for name in variants}
    for round_idx in range(args.runs):
        order = variants[round_idx % len(variants):] + variants[:round_idx % len(variants)]
        for name in order:
            out_dir = tempfile.mkdtemp(dir=tmp)
            spec = dict(variant=name, config=args.config, checkpoint=args.checkpoint,
                        image=image, out_dir=out_dir, threads=args.threads or 2,
                        test_cfg=test_cfg, full_resolution=args.full_resolution)
            proc = subprocess.run(
                [sys.executable, osp.abspath(__file__), '--large-image-worker',
                 json.dumps(spec)], capture_output=True, text=True)
            if proc.returncode != 0:
                raise RuntimeError(f'large-image worker {name!r} failed:\n{proc.stderr[-3000:]}')
            result = json.loads(proc.stdout.strip().splitlines()[-1])
            results[name].append(result)
            print(f'round {round_idx + 1} {name}: {result["seconds"]:.1f} s, peak '
                  f'{result["peak_rss_mb"]:.0f} MB, stages {result["stages"]}', flush=True)
    lines = ['| variant | total s (median) | inference s | overlay s | peak RSS MB (max) | '
             'seg_logits kept | labels |', '|---|---|---|---|---|---|---|']
    for name, runs in results.items():
        med = lambda key: statistics.median(key(r) for r in runs)  # noqa: E731
        lines.append(
            f'| {name} | {med(lambda r: r["seconds"]):.1f} | '
            f'{med(lambda r: r["stages"]["inference"]["seconds"]):.1f} | '
            f'{med(lambda r: r["stages"]["overlay"]["seconds"]):.1f} | '
            f'{max(r["peak_rss_mb"] for r in runs):.0f} | {runs[0]["has_logits"]} | '
            f'{runs[0]["label_digest"]} |')
    table = '\n'.join(lines)
    print(f'{args.config}, {width}x{height} image, test_cfg {test_cfg}, '
          f'{"full resolution" if args.full_resolution else "test pipeline as configured"}, '
          f'{args.threads or 2} threads')
    print(table)
    return dict(config=args.config, image_shape=[height, width], test_cfg=test_cfg,
                full_resolution=args.full_resolution, results=results, table=table)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Benchmark segmentor inference')
    parser.add_argument('config', nargs='?', help='model config')
    parser.add_argument('--against-mmseg-san', action='store_true',
                        help="time our SAN (fp32 and bf16) against mmseg's SAN, same weights")
    parser.add_argument('--kernels', action='store_true',
                        help="time our attention/linear kernels against PyTorch's defaults")
    parser.add_argument('--tiny', action='store_true',
                        help='--against-mmseg-san or --kernels at tiny sizes (smoke test)')
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
    if args.config is None and not (args.against_mmseg_san or args.kernels):
        parser.error('a CONFIG is required (or --against-mmseg-san or --kernels)')
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
    if args.kernels:
        report = kernel_comparison(args)
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
