"""Segment images into any list of class names.

    python tools/infer.py --config configs/baseline_tiny_synthetic.py --checkpoint ckpt.pth \
        --images a.png b.jpg --classes "background,red circle,green square" --out-dir out/

For every image writes ``<name>_label.png`` (uint8 class indices into ``--classes``; use a
16-bit PNG when there are more than 256 classes) and ``<name>_overlay.png`` (the prediction
over the image with the class names and a legend), and prints their paths. Images from several
folders keep their folders below their common parent (``a/x.png`` and ``b/x.png`` write
``out/a/x_*.png`` and ``out/b/x_*.png``), so no output overwrites another.

Errors (a missing, empty or undecodable image, a directory as image, a checkpoint that does
not fit the model, an unavailable ``--device``) are one line on stderr with exit status 1;
``--debug`` adds the traceback.
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
    parser.add_argument('--debug', action='store_true',
                        help='on an error, print the full traceback (default: one line)')
    return parser.parse_args(argv)


def save_label(label: np.ndarray, path: str) -> None:
    dtype = np.uint8 if label.max(initial=0) < 256 else np.uint16
    Image.fromarray(label.astype(dtype)).save(path)


def output_stems(images, out_dir):
    """``out_dir/<relative folder>/<name>`` for every image, without extension and unique.

    Images in one folder map to ``out_dir/<name>``; images from several folders keep their
    path below the folders' common parent, so equal names in different folders do not
    overwrite each other. Two images that would still share a stem (``x.png`` and ``x.jpg``
    in one folder) are refused with a ValueError naming both.
    """
    folders = [osp.dirname(osp.abspath(p)) for p in images]
    root = osp.commonpath(folders) if folders else ''
    stems, seen = [], {}
    for path in images:
        rel = osp.relpath(osp.abspath(path), root)
        stem = osp.join(out_dir, osp.splitext(rel)[0])
        other = seen.setdefault(stem, path)
        if osp.abspath(other) != osp.abspath(path):
            raise ValueError(f'images {other} and {path} would both write {stem}_label.png; '
                             'rename one or run them separately')
        stems.append(stem)
    return stems


def main(argv=None):
    args = parse_args(argv)
    # Fail on a bad path before the (slow) imports and the model build.
    images = list(dict.fromkeys(args.images))  # each image once, in order
    for path in images:
        if osp.isdir(path):
            raise IsADirectoryError(f'image path is a directory, not an image file: {path}')
        if not osp.isfile(path):
            raise FileNotFoundError(f'image file not found: {path}')
        if osp.getsize(path) == 0:
            raise ValueError(f'image file is empty (0 bytes): {path}')
    stems = output_stems(images, args.out_dir)
    from mmseg_ovseg.apis import OpenVocabInferencer
    from mmseg_ovseg.utils.dist import check_device
    from mmseg_ovseg.utils.load_guard import resolve_checkpoint_path

    check_device(args.device)
    checkpoint = None if args.checkpoint is None else resolve_checkpoint_path(args.checkpoint)
    inferencer = OpenVocabInferencer(
        args.config, checkpoint, classes=args.classes, templates=args.templates,
        device=args.device)
    print(f'classes ({len(inferencer.classes)}): {", ".join(inferencer.classes)}')
    written = []
    for path, stem in zip(images, stems):
        sample = inferencer(path)[0]
        os.makedirs(osp.dirname(stem) or '.', exist_ok=True)
        label_file, overlay_file = f'{stem}_label.png', f'{stem}_overlay.png'
        save_label(sample.pred_sem_seg.data[0].cpu().numpy(), label_file)
        inferencer.visualize(path, sample, overlay_file, opacity=args.opacity)
        print(label_file)
        print(overlay_file)
        written += [label_file, overlay_file]
    return written


if __name__ == '__main__':
    from mmseg_ovseg.utils.cli import run_cli
    sys.exit(run_cli(main, 'infer.py'))
