"""Draw a config's dataset samples (after its pipeline) with their ground truth.

    python tools/misc/browse_dataset.py CONFIG --output-dir DIR [--split train] [--max N]
        [--cfg-options ...]

Our replacement of mmseg 1.2.2's ``tools/misc/browse_dataset.py``, which, in this
environment, stops at the first sample: it hands the visualizer a non-contiguous view of the
image (``permute`` + channel flip), which OpenCV 5's drawing functions refuse ("Layout of the
output array img is incompatible with cv::Mat"). Here the image is made contiguous, the plugin
is imported (its datasets and transforms), a test pipeline's image is drawn at the size of
its labels (loaded after the resize there), the pictures are written to
``DIR/<image name>.png`` and the dataset's class names label the regions.
"""
import argparse
import os
import os.path as osp
import sys

import numpy as np

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

from mmengine.config import Config, DictAction  # noqa: E402
from mmengine.registry import init_default_scope  # noqa: E402

import mmseg_ovseg  # noqa: E402,F401  (registers the plugin's datasets and transforms)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description='Draw dataset samples with ground truth')
    parser.add_argument('config')
    parser.add_argument('--output-dir', required=True, help='where the pictures go')
    parser.add_argument('--split', choices=['train', 'val', 'test'], default='train')
    parser.add_argument('--max', type=int, default=None, help='at most this many samples')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    args = parser.parse_args(argv)
    if not osp.isfile(args.config):
        print(f'error: config file not found: {args.config}', file=sys.stderr)
        return 1
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    from mmseg.registry import DATASETS, VISUALIZERS

    from mmseg_ovseg.datasets.layout_check import check_dataset_layout

    ds_cfg = cfg.get(f'{args.split}_dataloader').dataset
    problems = check_dataset_layout(ds_cfg)
    if problems:
        print('error: ' + '; '.join(problems), file=sys.stderr)
        return 1
    dataset = DATASETS.build(ds_cfg)
    vis_cfg = cfg.get('visualizer') or dict(type='SegLocalVisualizer')
    vis_cfg = dict(vis_cfg, name='browse_dataset', save_dir=None, vis_backends=None)
    visualizer = VISUALIZERS.build(vis_cfg)
    visualizer.dataset_meta = dataset.metainfo
    os.makedirs(args.output_dir, exist_ok=True)
    n = len(dataset) if args.max is None else min(args.max, len(dataset))
    for i in range(n):
        item = dataset[i]
        # (C, H, W) BGR tensor -> contiguous (H, W, C) RGB array
        img = np.ascontiguousarray(item['inputs'].permute(1, 2, 0).numpy()[..., ::-1])
        sample = item['data_samples'].numpy()
        if 'gt_sem_seg' in sample and sample.gt_sem_seg.shape != img.shape[:2]:
            # test pipelines load the labels after resizing (metrics compare at the original
            # size): draw at the labels' size
            import mmcv
            h, w = sample.gt_sem_seg.shape
            img = np.ascontiguousarray(mmcv.imresize(img, (w, h)))
        name = osp.splitext(osp.basename(sample.img_path))[0]
        visualizer.add_datasample(name, img, sample, draw_pred=False, show=False,
                                  out_file=osp.join(args.output_dir, f'{name}.png'))
    print(f'{n} samples drawn to {args.output_dir}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
