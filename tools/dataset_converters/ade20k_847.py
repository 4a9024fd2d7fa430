"""ADE20K-Full (847 classes) from the ADE20K full release, in the layout our configs read.

    python tools/dataset_converters/ade20k_847.py data/ADE20K_2021_17_01 [--splits validation]
        [--nproc 8] [--max-size 512]

Input: the extracted ``ADE20K_2021_17_01.zip`` of the full release (ADE20K dataset page,
registration needed)::

    ADE20K_2021_17_01/images/ADE/{training,validation}/<scene group>/<scene>/
        ADE_val_00000001.jpg, ADE_val_00000001_seg.png (RGB-coded classes), ...

Output (what ``configs/san_vitb16_ade-847.py`` reads), next to the input::

    ADE20K_2021_17_01/images_detectron2/<split>/ADE_val_00000001.jpg
    ADE20K_2021_17_01/annotations_detectron2/<split>/ADE_val_00000001.tif   (uint16)

The procedure of the detectron2 preparation used by SAN and the other open-vocabulary papers:
the object class of a pixel is ``R // 10 * 256 + G`` of ``*_seg.png``; the 847 evaluated
classes get train ids 0..846 (``ade20k_847_ids.json``, taken from SAN's
``register_ade20k_full.py``), every other class and unlabelled pixels get 65535 (ignored).
Images whose shorter side exceeds ``--max-size`` (512) are resized so that it is 512 (image
bilinear, labels nearest); all images are re-encoded as JPEG by PIL at its default quality,
as the original preparation does, so that the evaluated pixels are the same.
"""
import argparse
import json
import os
import os.path as osp
import sys
from multiprocessing import Pool
from typing import List, Sequence, Tuple

import cv2
import numpy as np
from PIL import Image

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

from mmseg_ovseg.datasets.layout_check import DatasetLayoutError, describe_dir  # noqa: E402

IDS_FILE = osp.join(osp.dirname(osp.abspath(__file__)), 'ade20k_847_ids.json')
IGNORE = 65535
SPLITS = ('training', 'validation')
VAL_IMAGES = 2000  # ADE20K full release validation split


def load_id_table(path: str = IDS_FILE) -> np.ndarray:
    """Lookup table ``lut[ade_class_index] -> train id`` (uint16, 65535 for the rest)."""
    with open(path) as f:
        ids = json.load(f)['ids']
    if len(ids) != 847 or len(set(ids)) != 847:
        raise ValueError(f'{path}: expected 847 distinct class indices, got {len(ids)}')
    # the largest index a _seg.png can encode: R = 255 -> 25 * 256 + 255
    lut = np.full(25 * 256 + 256, IGNORE, dtype=np.uint16)
    lut[np.asarray(ids)] = np.arange(847, dtype=np.uint16)
    return lut


def class_indices(seg_rgb: np.ndarray, path: str = '') -> np.ndarray:
    """ADE object class index per pixel of a full-release ``*_seg.png`` (RGB): R/10*256+G."""
    if seg_rgb.ndim != 3 or seg_rgb.shape[2] < 3:
        raise DatasetLayoutError(
            f'{path}: a single-channel label map ({seg_rgb.shape}); the ADE20K full release '
            'codes classes in the R and G channels of *_seg.png. A grey label map is the '
            'SceneParsing (ADEChallengeData2016, 150 classes) format, not this archive')
    r = seg_rgb[..., 0].astype(np.int32)
    g = seg_rgb[..., 1].astype(np.int32)
    return (r // 10) * 256 + g


def target_size(h: int, w: int, max_size: int) -> Tuple[int, int]:
    """``(h, w)`` after shrinking the shorter side to ``max_size`` (unchanged if not larger)."""
    if w >= h > max_size:
        return max_size, round(w / float(h) * max_size)
    if h >= w > max_size:
        return round(h / float(w) * max_size), max_size
    return h, w


def find_images(root: str, split: str) -> List[Tuple[str, str]]:
    """``(image, *_seg.png)`` pairs of a split, sorted; raises on a wrong or partial archive."""
    split_dir = osp.join(root, 'images', 'ADE', split)
    if not osp.isdir(split_dir):
        if osp.isdir(osp.join(root, 'ADEChallengeData2016')) or (
                osp.isdir(osp.join(root, 'annotations'))
                and osp.isdir(osp.join(root, 'images', split))):
            raise DatasetLayoutError(
                f'{root} is the SceneParsing release (ADEChallengeData2016: images/{split}, '
                'annotations/), i.e. ADE20K-150; ADE20K-847 needs the full release '
                f'ADE20K_2021_17_01 with images/ADE/{split}/')
        raise DatasetLayoutError(
            f'expected {split_dir} (the extracted ADE20K_2021_17_01.zip); {root} holds '
            f'{describe_dir(root)}')
    pairs, no_seg = [], []
    for dirpath, dirnames, files in os.walk(split_dir):
        dirnames.sort()
        for name in sorted(files):
            if not name.endswith('.jpg'):
                continue
            img = osp.join(dirpath, name)
            seg = img[:-len('.jpg')] + '_seg.png'
            (pairs if osp.isfile(seg) else no_seg).append((img, seg))
    if no_seg:
        shown = ', '.join(s for _, s in no_seg[:3])
        raise DatasetLayoutError(
            f'{len(no_seg)} of the {len(pairs) + len(no_seg)} images in {split_dir} have no '
            f'*_seg.png next to them (a half-extracted archive?), e.g. {shown}')
    if not pairs:
        raise DatasetLayoutError(f'no ADE_*.jpg images under {split_dir} (it holds '
                                 f'{describe_dir(split_dir)})')
    names = [osp.basename(i) for i, _ in pairs]
    if len(set(names)) != len(names):
        raise DatasetLayoutError(f'{split_dir}: duplicate image names in different folders')
    return pairs


def convert_one(args) -> str:
    img_path, seg_path, out_img, out_lab, lut, max_size = args
    img = np.asarray(Image.open(img_path))
    seg_img = Image.open(seg_path)
    # a grey or palette map would turn into R = G = B here and decode to wrong classes
    seg = np.asarray(seg_img if seg_img.mode in ('RGB', 'RGBA') else seg_img.convert('L'))
    if img.shape[:2] != seg.shape[:2]:
        raise DatasetLayoutError(f'{seg_path}: size {seg.shape[:2]} differs from its image '
                                 f'{img.shape[:2]}')
    label = lut[class_indices(seg, seg_path)]
    h, w = img.shape[:2]
    new_h, new_w = target_size(h, w, max_size)
    if (new_h, new_w) != (h, w):
        img = cv2.resize(img, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
        label = cv2.resize(label, (new_w, new_h), interpolation=cv2.INTER_NEAREST)
    Image.fromarray(img).save(out_img)
    Image.fromarray(label).save(out_lab)  # 16-bit TIFF
    return out_lab


def convert(root: str, splits: Sequence[str] = ('validation', ), nproc: int = 1,
            max_size: int = 512, out_root: str = None) -> dict:
    """Convert ``splits`` of the full release at ``root``; returns ``{split: n_images}``."""
    if not osp.isdir(root):
        parent = osp.dirname(osp.normpath(root)) or '.'
        raise DatasetLayoutError(f'{root} not found ({parent} holds {describe_dir(parent)}); '
                                 'extract ADE20K_2021_17_01.zip there')
    out_root = out_root or root
    lut = load_id_table()
    done = {}
    for split in splits:
        if split not in SPLITS:
            raise ValueError(f'unknown split {split!r}; expected one of {SPLITS}')
        pairs = find_images(root, split)
        img_dir = osp.join(out_root, 'images_detectron2', split)
        lab_dir = osp.join(out_root, 'annotations_detectron2', split)
        os.makedirs(img_dir, exist_ok=True)
        os.makedirs(lab_dir, exist_ok=True)
        jobs = [(img, seg, osp.join(img_dir, osp.basename(img)),
                 osp.join(lab_dir, osp.basename(img)[:-len('.jpg')] + '.tif'), lut, max_size)
                for img, seg in pairs]
        if nproc > 1:
            with Pool(nproc) as pool:
                for i, _ in enumerate(pool.imap_unordered(convert_one, jobs, chunksize=8)):
                    if (i + 1) % 1000 == 0:
                        print(f'{split}: {i + 1}/{len(jobs)}', flush=True)
        else:
            for i, job in enumerate(jobs):
                convert_one(job)
                if (i + 1) % 1000 == 0:
                    print(f'{split}: {i + 1}/{len(jobs)}', flush=True)
        done[split] = len(jobs)
        note = ''
        if split == 'validation' and len(jobs) != VAL_IMAGES:
            note = f' (the full validation split has {VAL_IMAGES})'
        print(f'{split}: {len(jobs)} images -> {img_dir}, {lab_dir}{note}')
    return done


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description='ADE20K full release -> ADE20K-847 (16-bit TIFF labels, 65535 = ignore)')
    parser.add_argument('root', help='the extracted ADE20K_2021_17_01 folder')
    parser.add_argument('--splits', nargs='+', default=['validation'], choices=SPLITS,
                        help='splits to convert (default: validation, the benchmark)')
    parser.add_argument('--nproc', type=int, default=1, help='worker processes')
    parser.add_argument('--max-size', type=int, default=512,
                        help='shrink images whose shorter side exceeds this (default 512, '
                        'as the original preparation)')
    parser.add_argument('-o', '--out-dir', help='output root (default: ROOT)')
    args = parser.parse_args(argv)
    try:
        convert(args.root, args.splits, args.nproc, args.max_size, args.out_dir)
    except (DatasetLayoutError, FileNotFoundError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
