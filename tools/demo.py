"""End-to-end CPU demo (``make demo``): synthetic data -> train -> evaluate -> open-vocabulary
inference picture.

1. writes the synthetic shapes dataset to ``data/synthetic`` if it is not there yet;
2. trains ``DEMO_CONFIG`` (tiny SAN on a randomly initialised CLIP; ``--config`` picks another,
   e.g. ``configs/baseline_tiny_synthetic.py``) with mmengine's Runner in ``work_dirs/demo``;
3. evaluates on the val split and prints ``Synthetic val mIoU: xx.xx``;
4. segments a val image with a vocabulary given at run time (a subset of the class names, in
   another order) and writes an overlay with a legend to ``work_dirs/demo/``.

    .venv/bin/python tools/demo.py [--config CONFIG] [--max-iters N] [--work-dir DIR]
"""
import argparse
import os.path as osp
import sys
import time

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if REPO_ROOT not in sys.path:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, REPO_ROOT)

import mmseg_ovseg  # noqa: E402,F401  (fills registries, safe checkpoint loading)
from mmengine.config import Config  # noqa: E402
from mmengine.runner import Runner  # noqa: E402

from mmseg_ovseg.datasets.synthetic import generate_synthetic_dataset  # noqa: E402

# The demo model: tiny SAN (1000 iterations). The one-stage CLIP baseline still runs with
# `--config configs/baseline_tiny_synthetic.py`.
DEMO_CONFIG = 'configs/san_tiny_synthetic.py'
DATA_ROOT = 'data/synthetic'
WORK_DIR = 'work_dirs/demo'
NUM_TRAIN, NUM_VAL, SEED, SIZE = 400, 100, 0, 128
# Open-vocabulary step: names chosen at inference time, not the training order.
DEMO_VOCABULARY = ['orange ring', 'background', 'blue triangle', 'red circle', 'cyan checker',
                   'yellow stripes', 'purple dots', 'green square']


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='mmseg-ovseg CPU demo on synthetic data')
    parser.add_argument('--config', default=DEMO_CONFIG, help='demo config')
    parser.add_argument('--work-dir', default=WORK_DIR, help='logs, checkpoint, pictures')
    parser.add_argument('--data-root', default=DATA_ROOT, help='synthetic dataset location')
    parser.add_argument('--max-iters', type=int, default=None,
                        help='override the number of training iterations')
    return parser.parse_args(argv)


def build_cfg(args) -> Config:
    cfg = Config.fromfile(osp.join(REPO_ROOT, args.config)
                          if not osp.isabs(args.config) else args.config)
    cfg.work_dir = osp.abspath(args.work_dir)
    data_root = osp.abspath(args.data_root)
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[loader].dataset.data_root = data_root
    if args.max_iters is not None:
        n = args.max_iters
        cfg.train_cfg.max_iters = n
        # drop the phases that would start at or after the new end (e.g. the poly phase
        # after a warmup longer than n), cut the others at n
        scheds = [s for s in cfg.param_scheduler if s.get('begin', 0) < n]
        for sched in scheds:
            sched.end = min(sched.end, n)
        cfg.param_scheduler = scheds
        cfg.default_hooks.checkpoint.interval = n
    # Evaluate once, after training (step 3), not inside the loop.
    cfg.train_cfg.val_interval = cfg.train_cfg.max_iters + 1
    return cfg


def method_name(cfg: Config) -> str:
    """A readable name of the method a config trains."""
    model = cfg.model
    if model.type == 'SAN':
        return 'SAN (side adapter network, tiny widths)'
    head = model.get('decode_head', {}).get('type', '?')
    if model.type == 'TextEncoderDecoder' and head == 'PatchTextHead':
        return 'one-stage CLIP baseline (TextEncoderDecoder + PatchTextHead)'
    return f'{model.type} + {head}'


def pick_demo_image(data_root: str) -> str:
    """The first val image that shows at least three object classes."""
    import numpy as np
    from PIL import Image
    for i in range(NUM_VAL):
        name = f'{i:06d}.png'
        label = np.asarray(Image.open(osp.join(data_root, 'ann_dir', 'val', name)))
        if len(np.unique(label)) >= 4:
            return osp.join(data_root, 'img_dir', 'val', name)
    return osp.join(data_root, 'img_dir', 'val', '000000.png')


def main(argv=None):
    args = parse_args(argv)
    start = time.time()

    info = generate_synthetic_dataset(args.data_root, num_train=NUM_TRAIN, num_val=NUM_VAL,
                                      seed=SEED, size=SIZE)
    print(f'[demo] data: {info["data_root"]} '
          f'({"generated" if info["generated"] else "already present"}, '
          f'{NUM_TRAIN} train / {NUM_VAL} val)', flush=True)

    cfg = build_cfg(args)
    runner = Runner.from_cfg(cfg)
    t0 = time.time()
    runner.train()
    train_time = time.time() - t0
    metrics = runner.val()
    ckpt = osp.join(cfg.work_dir, f'iter_{cfg.train_cfg.max_iters}.pth')

    from mmseg_ovseg.apis import OpenVocabInferencer
    image = pick_demo_image(osp.abspath(args.data_root))
    inferencer = OpenVocabInferencer(cfg, checkpoint=ckpt, classes=DEMO_VOCABULARY)
    result = inferencer(image)[0]
    out_file = osp.join(cfg.work_dir, 'open_vocab_demo.png')
    inferencer.visualize(image, result, out_file=out_file)
    found = [DEMO_VOCABULARY[i] for i in sorted(set(result.pred_sem_seg.data.unique().tolist()))]

    print('\n' + '=' * 64)
    print(f'Method: {method_name(cfg)}')
    print(f'Config: {args.config} ({cfg.train_cfg.max_iters} iterations, '
          f'train {train_time:.0f}s)')
    print(f'Synthetic val mIoU: {metrics["mIoU"]:.2f}   (aAcc {metrics["aAcc"]:.2f}, '
          f'mAcc {metrics["mAcc"]:.2f})   [{method_name(cfg)}]')
    print(f'Checkpoint: {ckpt}')
    print(f'Open-vocabulary inference on {image}')
    print(f'  vocabulary: {DEMO_VOCABULARY}')
    print(f'  found: {found}')
    print(f'  picture: {out_file}')
    print(f'Total demo time: {time.time() - start:.0f}s')
    print('=' * 64)
    return metrics


if __name__ == '__main__':
    main()
