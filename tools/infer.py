"""Segment images into any list of class names.

    python tools/infer.py --config configs/baseline_tiny_synthetic.py --checkpoint ckpt.pth \
        --images a.png b.jpg --classes "background,red circle,green square" --out-dir out/

For every image writes ``<name>_label.png`` (uint8 class indices into ``--classes``; use a
16-bit PNG when there are more than 256 classes) and ``<name>_overlay.png`` (the prediction
over the image with the class names and a legend), and prints their paths.
"""
import argparse
import os
import os.path as osp
import sys

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if REPO_ROOT not in sys.path:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, REPO_ROOT)

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Open-vocabulary segmentation of images')
    parser.add_argument('--config', required=True, help='model config file')
    parser.add_argument('--checkpoint', default=None, help='trained weights (.pth)')
    parser.add_argument('--image', '--images', dest='images', nargs='+', required=True,
                        help='image file(s)')
    parser.add_argument('--classes', default=None,
                        help='comma-separated names ("cat,dog,grass"), a .txt file (one name '
                        'per line) or a vocabulary name (ade150, ...); default: the '
                        "model's training classes")
    parser.add_argument('--templates', default=None,
                        help="prompt templates: 'vild', 'imagenet', 'single', ...")
    parser.add_argument('--out-dir', default='infer_out', help='output directory')
    parser.add_argument('--device', default='cpu', help="'cpu' or 'cuda:0'")
    parser.add_argument('--opacity', type=float, default=0.5, help='overlay opacity')
    return parser.parse_args(argv)


def save_label(label: np.ndarray, path: str) -> None:
    dtype = np.uint8 if label.max(initial=0) < 256 else np.uint16
    Image.fromarray(label.astype(dtype)).save(path)


def main(argv=None):
    args = parse_args(argv)
    # Fail on a bad path before the (slow) imports and the model build.
    for path in args.images:
        if not osp.isfile(path):
            raise FileNotFoundError(f'image file not found: {path}')
    if args.checkpoint is not None and not osp.isfile(args.checkpoint):
        raise FileNotFoundError(f'checkpoint file not found: {args.checkpoint}')
    from mmseg_ovseg.apis import OpenVocabInferencer

    inferencer = OpenVocabInferencer(
        args.config, args.checkpoint, classes=args.classes, templates=args.templates,
        device=args.device)
    os.makedirs(args.out_dir, exist_ok=True)
    print(f'classes ({len(inferencer.classes)}): {", ".join(inferencer.classes)}')
    written = []
    for path in args.images:
        sample = inferencer(path)[0]
        name = osp.splitext(osp.basename(path))[0]
        label_file = osp.join(args.out_dir, f'{name}_label.png')
        overlay_file = osp.join(args.out_dir, f'{name}_overlay.png')
        save_label(sample.pred_sem_seg.data[0].cpu().numpy(), label_file)
        inferencer.visualize(path, sample, overlay_file, opacity=args.opacity)
        print(label_file)
        print(overlay_file)
        written += [label_file, overlay_file]
    return written


if __name__ == '__main__':
    try:
        main()
    except FileNotFoundError as e:  # a wrong path is a usage error, not a crash
        sys.exit(f'infer.py: error: {e}')
