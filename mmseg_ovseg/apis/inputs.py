"""Image inputs and outputs of the inferencers and ``tools/infer.py``: files, folders, globs,
list files; images read with clear errors; output names that cannot collide; label maps."""
import glob
import os
import os.path as osp
from typing import Iterable, List, Sequence, Union

import mmcv
import numpy as np

__all__ = ['IMAGE_EXTENSIONS', 'list_images', 'read_list_file', 'output_stems', 'read_image',
           'save_label']

#: Extensions (lower case) of the files a folder or glob contributes.
IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.webp', '.ppm', '.pgm')


def _is_image_name(path: str) -> bool:
    return path.lower().endswith(IMAGE_EXTENSIONS)


def _folder_images(folder: str, recursive: bool) -> List[str]:
    if not recursive:
        return sorted(osp.join(folder, f) for f in os.listdir(folder)
                      if _is_image_name(f) and osp.isfile(osp.join(folder, f)))
    found = []
    for root, dirs, files in os.walk(folder, followlinks=True):
        dirs.sort()
        found += [osp.join(root, f) for f in sorted(files) if _is_image_name(f)]
    return found


def read_list_file(path: str) -> List[str]:
    """Image paths of a list file: one per line, relative paths taken relative to the list
    file's folder, blank lines and ``#`` comments skipped."""
    if not osp.isfile(path):
        raise FileNotFoundError(f'image list file not found: {path}')
    base = osp.dirname(osp.abspath(path))
    out = []
    with open(path, encoding='utf-8') as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith('#'):
                out.append(line if osp.isabs(line) else osp.join(base, line))
    if not out:
        raise ValueError(f'image list file {path} names no images')
    return out


def list_images(inputs: Union[str, Sequence[str]], recursive: bool = True) -> List[str]:
    """Image files of ``inputs``, each once, in order.

    Each entry is a file (taken as it is: a non-image file fails later with a clear decode
    error), a folder (its image files, sorted; sub-folders too with ``recursive``), or a glob
    pattern (``'photos/*.jpg'``, ``'data/**/*.png'``; only image files). A ``.txt`` file is
    an image list (:func:`read_list_file`).

    Raises:
        FileNotFoundError: a path that does not exist and matches nothing as a glob.
        ValueError: a folder or glob without image files, an empty file.
    """
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    out: List[str] = []
    for item in inputs:
        item = str(item)
        if osp.isdir(item):
            found = _folder_images(item, recursive)
            if not found:
                raise ValueError(f'no image files ({", ".join(IMAGE_EXTENSIONS[:4])}, ...) in '
                                 f'folder {item}' + ('' if recursive else ' (not recursive)'))
            out += found
        elif osp.isfile(item):
            if item.lower().endswith('.txt'):
                out += read_list_file(item)
            else:
                if osp.getsize(item) == 0:
                    raise ValueError(f'image file is empty (0 bytes): {item}')
                out.append(item)
        elif glob.has_magic(item):
            found = sorted(p for p in glob.glob(item, recursive=True)
                           if osp.isfile(p) and _is_image_name(p))
            if not found:
                raise FileNotFoundError(f'no image files match {item}')
            out += found
        else:
            raise FileNotFoundError(f'image file not found: {item}')
    for path in out:  # entries of list files
        if not osp.isfile(path):
            raise FileNotFoundError(f'image file not found: {path}')
    return list(dict.fromkeys(out))


def output_stems(images: Iterable[str], out_dir: str) -> List[str]:
    """``out_dir/<relative folder>/<name>`` for every image, without extension and unique.

    Images in one folder map to ``out_dir/<name>``; images from several folders keep their
    path below the folders' common parent, so equal names in different folders do not
    overwrite each other. Two images that would still share a stem (``x.png`` and ``x.jpg``
    in one folder) are refused with a ValueError naming both.
    """
    images = list(images)
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


def read_image(image: Union[str, np.ndarray]) -> np.ndarray:
    """An ``(H, W, 3)`` uint8 BGR array from a path or an array; clear errors otherwise."""
    if isinstance(image, str):
        if osp.isdir(image):
            raise IsADirectoryError(f'image path is a directory, not an image file: '
                                    f'{image}')
        if not osp.isfile(image):
            raise FileNotFoundError(f'image file not found: {image}')
        if osp.getsize(image) == 0:
            raise ValueError(f'image file is empty (0 bytes): {image}')
        try:
            img = mmcv.imread(image, flag='color', channel_order='bgr')
        except Exception as e:  # noqa: BLE001  (decoders raise many types)
            raise ValueError(f'cannot decode image file {image}: {e}') from e
        if img is None or img.size == 0:
            raise ValueError(f'cannot decode image file: {image} (not an image format '
                             'OpenCV/Pillow reads, or damaged)')
        return img
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError('image arrays must be (H, W, 3) uint8 (BGR), got shape '
                             f'{image.shape} dtype {image.dtype}')
        if image.shape[0] == 0 or image.shape[1] == 0:
            raise ValueError(f'image array is empty: shape {image.shape}')
        return image
    raise TypeError(f'image must be a path or an (H, W, 3) uint8 array, got '
                    f'{type(image).__name__}')


def save_label(label: np.ndarray, path: str) -> None:
    """Write class indices as a PNG (uint8, uint16 beyond 255)."""
    from PIL import Image
    os.makedirs(osp.dirname(path) or '.', exist_ok=True)
    dtype = np.uint8 if label.max(initial=0) < 256 else np.uint16
    Image.fromarray(label.astype(dtype)).save(path)
