"""Check that a dataset config's files are on disk, before anything is built.

mmseg builds a dataset lazily and reports a missing folder as an empty dataset or a
``FileNotFoundError`` deep inside a loader worker. :func:`check_dataset_layout` looks at what a
dataset config reads (``data_root``, ``data_prefix`` folders, ``ann_file`` and, for REFER-style
datasets, ``instances_file``) and returns one sentence per problem, each naming the path it
expected: a missing root or folder, an empty image folder, images without their label map (a
half-extracted archive), names in the split file whose image or label is missing.

Used by ``tools/test_ov.py`` (a missing benchmark gets one clear line) and
``tools/misc/check_datasets.py``; the dataset converters raise :class:`DatasetLayoutError`.
"""
import os
import os.path as osp
from typing import Iterable, List, Mapping, Optional, Sequence, Tuple

__all__ = [
    'DatasetLayoutError', 'describe_dir', 'check_dataset_layout', 'dataset_paths',
    'dataset_size', 'format_problems', 'unique_datasets'
]

# mmseg's BaseSegDataset defaults
_DEFAULT_IMG_SUFFIX = '.jpg'
_DEFAULT_SEG_SUFFIX = '.png'
# default suffixes of the mmseg dataset types our configs use, when the config gives none
_TYPE_SUFFIXES = {
    'COCOStuffDataset': ('.jpg', '_labelTrainIds.png'),
    'ADE20KDataset': ('.jpg', '.png'),
    'PascalVOCDataset': ('.jpg', '.png'),
    'PascalContextDataset': ('.jpg', '.png'),
    'PascalContextDataset59': ('.jpg', '.png'),
    'SyntheticShapesDataset': ('.png', '.png'),
}
_MAX_NAMED = 3  # example paths shown per problem


class DatasetLayoutError(ValueError):
    """A dataset folder or archive is missing, incomplete or not the expected one."""


def describe_dir(path: str, limit: int = 8) -> str:
    """``'a/, b.txt, c.mat (+12 more)'``: what a folder holds, for error messages."""
    if not osp.isdir(path):
        return 'nothing (no such folder)' if not osp.exists(path) else 'a file, not a folder'
    entries = sorted(os.listdir(path))
    if not entries:
        return 'an empty folder'
    shown = [e + ('/' if osp.isdir(osp.join(path, e)) else '') for e in entries[:limit]]
    more = f' (+{len(entries) - limit} more)' if len(entries) > limit else ''
    return ', '.join(shown) + more


def _join(root: Optional[str], path: str) -> str:
    if not path or osp.isabs(path) or not root:
        return path
    return osp.join(root, path)


def dataset_paths(dataset_cfg: Mapping) -> dict:
    """The files a dataset config reads: ``data_root``, ``img_dir``, ``seg_dir``,
    ``ann_file``, ``instances_file`` (absent keys are None) and the suffixes."""
    root = dataset_cfg.get('data_root') or ''
    prefix = dataset_cfg.get('data_prefix') or {}
    img_suffix, seg_suffix = _TYPE_SUFFIXES.get(
        str(dataset_cfg.get('type')), (_DEFAULT_IMG_SUFFIX, _DEFAULT_SEG_SUFFIX))
    out = dict(
        data_root=root or None,
        img_dir=_join(root, prefix.get('img_path', '')) if 'img_path' in prefix else None,
        seg_dir=(_join(root, prefix['seg_map_path'])
                 if prefix.get('seg_map_path') else None),
        ann_file=_join(root, dataset_cfg['ann_file']) if dataset_cfg.get('ann_file') else None,
        instances_file=(_join(root, dataset_cfg['instances_file'])
                        if dataset_cfg.get('instances_file') else None),
        img_suffix=dataset_cfg.get('img_suffix', img_suffix),
        seg_suffix=dataset_cfg.get('seg_map_suffix', seg_suffix))
    return out


def _examples(paths: Sequence[str]) -> str:
    shown = ', '.join(paths[:_MAX_NAMED])
    return shown + (f' (+{len(paths) - _MAX_NAMED} more)' if len(paths) > _MAX_NAMED else '')


def _scan(folder: str, suffix: str) -> List[str]:
    """Paths relative to ``folder`` of the files ending in ``suffix`` (recursive, sorted)."""
    found = []
    for dirpath, _, files in os.walk(folder, followlinks=True):
        for name in files:
            if name.endswith(suffix):
                found.append(osp.relpath(osp.join(dirpath, name), folder))
    return sorted(found)


def _read_split(ann_file: str) -> List[str]:
    with open(ann_file) as f:
        return [line.strip() for line in f if line.strip()]


def check_dataset_layout(dataset_cfg: Mapping,
                         expected_count: Optional[int] = None) -> List[str]:
    """Problems with the files a dataset config reads; ``[]`` when all are present.

    Args:
        dataset_cfg: a dataset config dict (``type``, ``data_root``, ``data_prefix``,
            ``ann_file``, ``img_suffix``, ``seg_map_suffix``, ``instances_file``).
            ``ConcatDataset``/``RepeatDataset`` wrappers are checked member by member.
        expected_count: the number of samples of the complete split; fewer images (or split
            names) are reported as an incomplete extraction.

    Returns:
        list[str]: one sentence per problem, each naming the expected path.
    """
    if dataset_cfg.get('type') in ('ConcatDataset', ) and 'datasets' in dataset_cfg:
        return [p for d in dataset_cfg['datasets'] for p in check_dataset_layout(d)]
    if dataset_cfg.get('type') in ('RepeatDataset', 'ClassBalancedDataset'):
        return check_dataset_layout(dataset_cfg['dataset'], expected_count)
    p = dataset_paths(dataset_cfg)
    root = p['data_root']
    if root and not osp.isdir(root):
        parent = osp.dirname(osp.normpath(root)) or '.'
        return [f'data_root {root} not found (its parent {parent} holds '
                f'{describe_dir(parent)})']
    problems = _missing_files_and_folders(p)
    if problems or p['img_dir'] is None:
        return problems
    if p['ann_file'] and p['seg_dir'] is not None:
        count, problems = _split_file_problems(p)
    elif p['ann_file']:
        count = None  # REFER-style: the samples are in the annotation files
    else:
        count, problems = _image_folder_problems(p)
    if expected_count is not None and count is not None and count != expected_count:
        what = 'names in ' + p['ann_file'] if p['ann_file'] else 'images in ' + p['img_dir']
        problems.append(f'{count} {what}, the complete split has {expected_count} '
                        '(an incomplete extraction or another split?)')
    return problems


def _missing_files_and_folders(p: dict) -> List[str]:
    """The annotation files and the image/label folders of ``dataset_paths`` that are not
    there, each with what its parent folder holds."""
    problems: List[str] = []
    for key in ('ann_file', 'instances_file'):
        if p[key] and not osp.isfile(p[key]):
            where = osp.dirname(p[key]) or '.'
            problems.append(f'{key} {p[key]} not found ({where} holds {describe_dir(where)})')
    for name, folder in (('image folder', p['img_dir']), ('label folder', p['seg_dir'])):
        if folder is not None and not osp.isdir(folder):
            parent = osp.dirname(osp.normpath(folder)) or '.'
            problems.append(f'{name} {folder} not found ({parent} holds '
                            f'{describe_dir(parent)})')
    return problems


def _split_file_problems(p: dict) -> Tuple[Optional[int], List[str]]:
    """Split-file datasets: every listed name needs its image and its label map.

    Returns:
        tuple: the number of names (None if the file is empty) and the problems.
    """
    img_dir, seg_dir = p['img_dir'], p['seg_dir']
    names = _read_split(p['ann_file'])
    if not names:
        return None, [f'split file {p["ann_file"]} is empty']
    no_img = [osp.join(img_dir, n + p['img_suffix']) for n in names
              if not osp.isfile(osp.join(img_dir, n + p['img_suffix']))]
    no_seg = [osp.join(seg_dir, n + p['seg_suffix']) for n in names
              if not osp.isfile(osp.join(seg_dir, n + p['seg_suffix']))]
    problems = []
    if no_img:
        problems.append(f'{len(no_img)} of the {len(names)} images listed in '
                        f'{p["ann_file"]} are missing: {_examples(no_img)}')
    if no_seg:
        problems.append(f'{len(no_seg)} of the {len(names)} label maps listed in '
                        f'{p["ann_file"]} are missing: {_examples(no_seg)}')
    return len(names), problems


def _image_folder_problems(p: dict) -> Tuple[Optional[int], List[str]]:
    """Folder datasets: every image needs its label map (when the dataset has labels).

    Returns:
        tuple: the number of images (None if there are none) and the problems.
    """
    img_dir, seg_dir = p['img_dir'], p['seg_dir']
    images = _scan(img_dir, p['img_suffix'])
    if not images:
        return None, [f'image folder {img_dir} has no *{p["img_suffix"]} files (it holds '
                      f'{describe_dir(img_dir)})']
    problems = []
    if seg_dir is not None:
        no_seg = []
        for rel in images:
            seg = osp.join(seg_dir, rel[:-len(p['img_suffix'])] + p['seg_suffix'])
            if not osp.isfile(seg):
                no_seg.append(seg)
        if no_seg:
            problems.append(f'{len(no_seg)} of the {len(images)} images in {img_dir} have '
                            f'no label map: {_examples(no_seg)}')
    return len(images), problems


def dataset_size(dataset_cfg: Mapping) -> Optional[int]:
    """Samples of a complete dataset config: names in its split file, else images in its
    image folder; None for REFER-style datasets (samples come from annotation files)."""
    p = dataset_paths(dataset_cfg)
    if p['ann_file'] and p['seg_dir'] is not None:
        return len(_read_split(p['ann_file']))
    if p['ann_file'] or p['img_dir'] is None:
        return None
    return len(_scan(p['img_dir'], p['img_suffix']))


def format_problems(name: str, problems: Iterable[str]) -> str:
    """``'name: MISSING - a; b'`` or ``'name: ok'``."""
    problems = list(problems)
    return f'{name}: ok' if not problems else f'{name}: MISSING - ' + '; '.join(problems)


def unique_datasets(cfg) -> List[Tuple[str, Mapping]]:
    """``(dataloader key, dataset cfg)`` of a config's train/val/test dataloaders (each dataset
    once)."""
    seen, out = set(), []
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        loader = cfg.get(key)
        if not loader or 'dataset' not in loader:
            continue
        ds = loader['dataset']
        ident = repr(sorted((k, repr(v)) for k, v in ds.items() if k != 'pipeline'))
        if ident not in seen:
            seen.add(ident)
            out.append((key, ds))
    return out
