"""``--large-image``: ``tools/infer.py``'s time and peak RSS on one large image, mmseg's
one-window slide path and visualizer vs batched windows (+ prediction only), each variant in
a fresh process (``benchmark.py --large-image-worker SPEC``)."""
import json
import os.path as osp
import resource
import statistics
import sys
import time

import torch

from .timing import _PeakRSS, _release_free_memory

#: the script whose ``--large-image-worker`` runs one variant
BENCHMARK_PY = osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), 'benchmark.py')

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
    image = _write_large_image(tmp, height, width, args.seed)
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
                [sys.executable, BENCHMARK_PY, '--large-image-worker',
                 json.dumps(spec)], capture_output=True, text=True)
            if proc.returncode != 0:
                raise RuntimeError(f'large-image worker {name!r} failed:\n{proc.stderr[-3000:]}')
            result = json.loads(proc.stdout.strip().splitlines()[-1])
            results[name].append(result)
            print(f'round {round_idx + 1} {name}: {result["seconds"]:.1f} s, peak '
                  f'{result["peak_rss_mb"]:.0f} MB, stages {result["stages"]}', flush=True)
    table = _large_image_table(results)
    print(f'{args.config}, {width}x{height} image, test_cfg {test_cfg}, '
          f'{"full resolution" if args.full_resolution else "test pipeline as configured"}, '
          f'{args.threads or 2} threads')
    print(table)
    return dict(config=args.config, image_shape=[height, width], test_cfg=test_cfg,
                full_resolution=args.full_resolution, results=results, table=table)


def _write_large_image(folder: str, height: int, width: int, seed: int) -> str:
    """A photo-like JPEG of a realistic size: smooth colour blobs, not white noise."""
    import cv2
    import numpy as np
    image = osp.join(folder, f'image_{width}x{height}.jpg')
    rng = np.random.RandomState(seed)
    small = rng.randint(0, 256, (max(height // 64, 2), max(width // 64, 2), 3), np.uint8)
    cv2.imwrite(image, cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC))
    return image


def _large_image_table(results: dict) -> str:
    """Markdown table of the variants' rounds: medians of the times, max of the peak RSS."""
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
    return '\n'.join(lines)
