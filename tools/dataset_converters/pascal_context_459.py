"""PASCAL Context-459 (the full Context annotations) in the layout our configs read.

    python tools/dataset_converters/pascal_context_459.py data/VOCdevkit/VOC2010 \
        path/to/trainval [--json path/to/trainval_merged.json] [--splits val] [--nproc 8]

Input:

- ``VOC2010``: the PASCAL VOC 2010 devkit (``VOCtrainval_03-May-2010.tar``), for
  ``JPEGImages/``;
- ``trainval``: the folder of the full PASCAL-Context annotations (``trainval.tar.gz`` of the
  PASCAL-Context page: one ``<image>.mat`` per image with a ``LabelMap`` of class ids 1..459,
  0 = unlabelled);
- the split: ``VOC2010/ImageSets/SegmentationContext/<split>.txt`` when present (mmseg's
  ``pascal_context.py`` converter writes it for PC-59), otherwise the ``phase`` of each image in
  ``trainval_merged.json`` (``--json``; that list is then written to the same ``.txt``).

Output (what ``configs/san_vitb16_pc-459.py`` reads)::

    VOC2010/annotations_detectron2/pc459_<split>/<image>.tif   (uint16)

Labels as SAN's ``prepare_pcontext_sem_seg_459cls.py``: train id = ``LabelMap - 1`` (0..458,
the order of the 459 class names), unlabelled (0) -> 65535, ignored by the configs' metric.
"""
import argparse
import json
import os
import os.path as osp
import sys
from multiprocessing import Pool
from typing import List, Optional, Sequence

import numpy as np
from PIL import Image

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

from mmseg_ovseg.datasets.layout_check import DatasetLayoutError, describe_dir  # noqa: E402

NUM_CLASSES = 459
IGNORE = 65535
SPLIT_IMAGES = dict(train=4998, val=5105)  # the PASCAL-Context splits


def read_label_map(path: str) -> np.ndarray:
    """``LabelMap`` of a PASCAL-Context ``.mat`` as int64; names what it found otherwise."""
    from scipy.io import loadmat
    try:
        mat = loadmat(path)
    except Exception as e:  # noqa: BLE001  (scipy raises several types for a bad file)
        raise DatasetLayoutError(f'{path}: not a readable MATLAB file ({e})') from e
    if 'LabelMap' not in mat:
        keys = sorted(k for k in mat if not k.startswith('__'))
        hint = ''
        if 'GTcls' in keys or 'GTinst' in keys:
            hint = ' (that is the SBD / VOC-aug format, benchmark_RELEASE/dataset/cls)'
        raise DatasetLayoutError(
            f'{path}: no LabelMap; found {keys}{hint}. Expected the full PASCAL-Context '
            'annotations (trainval.tar.gz, one .mat with LabelMap per image)')
    label = np.asarray(mat['LabelMap'])
    if label.ndim != 2 or not (np.issubdtype(label.dtype, np.integer)
                               or np.all(np.mod(label, 1) == 0)):
        raise DatasetLayoutError(f'{path}: LabelMap is {label.dtype} {label.shape}; expected '
                                 'a 2-D map of integer class ids')
    label = label.astype(np.int64)
    if label.size and (label.min() < 0 or label.max() > NUM_CLASSES):
        raise DatasetLayoutError(f'{path}: LabelMap values {label.min()}..{label.max()} '
                                 f'outside 0..{NUM_CLASSES}')
    return label


def to_train_ids(label_map: np.ndarray) -> np.ndarray:
    """``LabelMap`` (0 unlabelled, 1..459) -> uint16 train ids (0..458, 65535 ignored)."""
    out = label_map.astype(np.int64) - 1
    out[label_map == 0] = IGNORE
    return out.astype(np.uint16)


def split_names(voc_root: str, split: str, json_path: Optional[str]) -> List[str]:
    """Image names of a split: the SegmentationContext list, else the json's ``phase``."""
    txt = osp.join(voc_root, 'ImageSets', 'SegmentationContext', f'{split}.txt')
    if osp.isfile(txt):
        with open(txt) as f:
            names = [line.strip() for line in f if line.strip()]
        if not names:
            raise DatasetLayoutError(f'{txt} is empty')
        return names
    if json_path is None:
        raise DatasetLayoutError(
            f'no split list {txt}; pass --json trainval_merged.json (PASCAL in Detail) or run '
            "mmseg's pascal_context.py converter first, which writes it")
    if not osp.isfile(json_path):
        raise DatasetLayoutError(f'--json {json_path} not found')
    with open(json_path) as f:
        try:
            data = json.load(f)
        except ValueError as e:
            raise DatasetLayoutError(f'{json_path}: not valid JSON ({e})') from e
    images = data.get('images') if isinstance(data, dict) else None
    if not isinstance(images, list) or not all(
            isinstance(i, dict) and 'phase' in i and 'file_name' in i for i in images):
        found = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise DatasetLayoutError(
            f'{json_path}: expected PASCAL in Detail annotations (trainval_merged.json: '
            f'"images" with "file_name" and "phase"); found {found}')
    names = sorted(osp.splitext(i['file_name'])[0] for i in images if i['phase'] == split)
    if not names:
        phases = sorted({str(i['phase']) for i in images})
        raise DatasetLayoutError(f'{json_path}: no image with phase {split!r} (phases: '
                                 f'{phases})')
    os.makedirs(osp.dirname(txt), exist_ok=True)
    with open(txt, 'w') as f:
        f.writelines(n + '\n' for n in names)
    print(f'wrote the {split} list ({len(names)} images) to {txt}')
    return names


def convert_one(args) -> str:
    mat_path, out_path = args
    Image.fromarray(to_train_ids(read_label_map(mat_path))).save(out_path)  # 16-bit TIFF
    return out_path


def convert(voc_root: str, mat_dir: str, json_path: Optional[str] = None,
            splits: Sequence[str] = ('val', ), nproc: int = 1) -> dict:
    """Write ``annotations_detectron2/pc459_<split>/*.tif``; returns ``{split: n}``."""
    img_dir = osp.join(voc_root, 'JPEGImages')
    if not osp.isdir(img_dir):
        raise DatasetLayoutError(
            f'expected {img_dir} (the VOC2010 devkit, VOCtrainval_03-May-2010.tar); '
            f'{voc_root} holds {describe_dir(voc_root)}')
    if not osp.isdir(mat_dir):
        parent = osp.dirname(osp.normpath(mat_dir)) or '.'
        raise DatasetLayoutError(f'annotation folder {mat_dir} not found ({parent} holds '
                                 f'{describe_dir(parent)}); extract trainval.tar.gz of '
                                 'the full PASCAL-Context annotations')
    done = {}
    for split in splits:
        names = split_names(voc_root, split, json_path)
        no_mat = [n for n in names if not osp.isfile(osp.join(mat_dir, n + '.mat'))]
        no_img = [n for n in names if not osp.isfile(osp.join(img_dir, n + '.jpg'))]
        if no_mat:
            raise DatasetLayoutError(
                f'{len(no_mat)} of the {len(names)} {split} images have no .mat in {mat_dir} '
                f'(e.g. {osp.join(mat_dir, no_mat[0] + ".mat")}); it holds '
                f'{describe_dir(mat_dir)}')
        if no_img:
            raise DatasetLayoutError(
                f'{len(no_img)} of the {len(names)} {split} images are missing from {img_dir} '
                f'(e.g. {no_img[0]}.jpg): an incomplete VOC2010 devkit?')
        out_dir = osp.join(voc_root, 'annotations_detectron2', f'pc459_{split}')
        os.makedirs(out_dir, exist_ok=True)
        jobs = [(osp.join(mat_dir, n + '.mat'), osp.join(out_dir, n + '.tif')) for n in names]
        if nproc > 1:
            with Pool(nproc) as pool:
                list(pool.imap_unordered(convert_one, jobs, chunksize=16))
        else:
            for job in jobs:
                convert_one(job)
        done[split] = len(jobs)
        note = ''
        if split in SPLIT_IMAGES and len(jobs) != SPLIT_IMAGES[split]:
            note = f' (the full {split} split has {SPLIT_IMAGES[split]})'
        print(f'{split}: {len(jobs)} label maps -> {out_dir}{note}')
    return done


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description='PASCAL-Context full annotations -> PC-459 (16-bit TIFF, 65535 = ignore)')
    parser.add_argument('voc_root', help='VOCdevkit/VOC2010 (JPEGImages, ImageSets)')
    parser.add_argument('mat_dir', help='the extracted trainval/ folder of .mat files')
    parser.add_argument('--json', help='trainval_merged.json, for the split when '
                        'ImageSets/SegmentationContext/<split>.txt does not exist')
    parser.add_argument('--splits', nargs='+', default=['val'], choices=['train', 'val'])
    parser.add_argument('--nproc', type=int, default=1)
    args = parser.parse_args(argv)
    try:
        convert(args.voc_root, args.mat_dir, args.json, args.splits, args.nproc)
    except DatasetLayoutError as e:
        print(f'error: {e}', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
