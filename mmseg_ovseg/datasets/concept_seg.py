"""The generated zero-shot segmentation benchmark over the tiny CLIP's concept space.

Scenes are drawn with :func:`mmseg_ovseg.datasets.concepts.render_scene` -- the same drawing
code that makes the tiny CLIP's caption data -- so every class of this benchmark is a concept
the tiny CLIP was pretrained on (``docs/tiny_clip.md``), and its seen/unseen split
(``'concepts'`` in :mod:`mmseg_ovseg.clip.vocabularies`) measures what the zero-shot papers
measure: segmenting classes whose pixels were never labelled in segmentation training.

Classes (:data:`CONCEPT_SEG_CLASSES`, the registered vocabulary ``'concepts'``, 55 names):
``'background'`` (label 0, a real class), the 48 ``'<colour> <shape>'`` compositions of the 8
colours and the 6 plain shapes (circle, square, triangle, star, ring, cross; the two texture
"shapes" stripes/checkerboard are left out), and the 6 object kinds (house, tree, car, face,
flower, fish). :data:`CONCEPT_INDEX` maps each label to its index in ``CONCEPT_CLASSES``.

Split (``_UNSEEN['concepts']`` in ``clip/vocabularies.py``, data like the real splits): 9
unseen classes, 8 novel compositions -- one per colour -- whose colour and shape both occur in
seen classes (``'purple star'`` is unseen while ``'purple circle'`` and ``'red star'`` are
seen), plus one object kind, ``'flower'``; all are concepts the tiny CLIP classifies
zero-shot (docs/open_vocab.md gives the rule and its accuracies). Unseen objects
are drawn in training images like any other (as in the real benchmarks, unseen things appear
in training images); :class:`~mmseg_ovseg.datasets.zero_shot.ZeroShotLabelMapping` turns their
pixels into ``ignore_index`` (inductive) or pseudo-label marks (transductive).

Layout written by :func:`generate_concept_dataset` (mmseg's, like the synthetic shapes):
``{data_root}/img_dir/{train,val}/NNNNNN.png`` (RGB) and ``ann_dir/{train,val}/NNNNNN.png``
(8-bit labels into :data:`CONCEPT_SEG_CLASSES`, no ignored pixels) plus ``meta.json``. Image
``i`` of a split depends only on ``(seed, split, i, size)`` and :data:`GENERATOR_VERSION`.
"""
import json
import os.path as osp
from typing import Dict, Tuple

import numpy as np
from mmseg.datasets import BaseSegDataset
from mmseg.registry import DATASETS

from ..clip.vocabularies import get_vocabulary, get_zero_shot_split
from .concepts import COLOR_NAMES, COLORS, CONCEPT_CLASSES, OBJECT_NAMES, class_index, render_scene
from .generated_dataset import META_FILE, SPLITS, check_counts, generate_atomically, write_split

# Bump when the scene sampling (or the drawing code in concepts.py) changes: data on disk
# with another version is regenerated.
GENERATOR_VERSION = 2  # 2: meta.json lists the current split
# Seed tag of this benchmark's random streams (the caption data use other seed layouts).
_STREAM_TAG = 0x5E6

SEG_SHAPES = ('circle', 'square', 'triangle', 'star', 'ring', 'cross')
CONCEPT_SEG_CLASSES: Tuple[str, ...] = (('background', )
                                        + tuple(f'{c} {s}' for c in COLOR_NAMES
                                                for s in SEG_SHAPES) + OBJECT_NAMES)
# Label -> index into CONCEPT_CLASSES (what render_scene draws).
CONCEPT_INDEX: Tuple[int, ...] = (0, ) + tuple(class_index(n) for n in CONCEPT_SEG_CLASSES[1:])
_TO_LABEL = np.zeros(len(CONCEPT_CLASSES), np.uint8)
_TO_LABEL[list(CONCEPT_INDEX)] = np.arange(len(CONCEPT_INDEX))

# Probabilities of 1, 2, 3, 4 objects per image; object box side as a fraction of the image
# side for one object / several (the caption data's ranges, so CLIP sees familiar scales).
NUM_OBJECTS_PROBS = (0.2, 0.3, 0.3, 0.2)
SCALE_SINGLE, SCALE_MULTI = (0.4, 0.7), (0.3, 0.55)


def _palette():
    """One display colour per class: the colour of a composition, fixed ones otherwise."""
    colors = dict(COLORS)
    objects = dict(house=(200, 150, 110), tree=(25, 105, 40), car=(185, 190, 200),
                   face=(240, 195, 160), flower=(250, 250, 245), fish=(70, 125, 165))
    out = [(110, 110, 110)]
    for name in CONCEPT_SEG_CLASSES[1:]:
        out.append(objects[name] if name in objects else colors[name.split()[0]])
    return [list(c) for c in out]


def render_concept_sample(seed: int, split: str, index: int, size: int = 128
                          ) -> Tuple[np.ndarray, np.ndarray]:
    """One scene of the benchmark.

    Returns:
        tuple: ``img`` uint8 ``(size, size, 3)`` RGB and ``label`` uint8 ``(size, size)``
        with values in ``[0, len(CONCEPT_SEG_CLASSES))``.
    """
    if split not in SPLITS:
        raise ValueError(f'split must be one of {SPLITS}, got {split!r}')
    rng = np.random.default_rng([_STREAM_TAG, seed, SPLITS.index(split), index, size])
    n = int(rng.choice(4, p=NUM_OBJECTS_PROBS)) + 1
    labels = rng.integers(1, len(CONCEPT_SEG_CLASSES), size=n)
    scale = SCALE_SINGLE if n == 1 else SCALE_MULTI
    img, concept_map = render_scene(rng, size, [CONCEPT_INDEX[i] for i in labels], scale=scale)
    return img, _TO_LABEL[concept_map]


def generate_concept_dataset(data_root: str = 'data/concepts',
                             num_train: int = 1000,
                             num_val: int = 250,
                             seed: int = 0,
                             size: int = 128) -> Dict:
    """Write the benchmark in mmseg layout, atomically; skip it if it is already there.

    Files are written to a temporary sibling directory renamed into place at the end (an
    interrupted run leaves no partial dataset). An existing dataset with other parameters or
    another :data:`GENERATOR_VERSION` is replaced; a non-empty directory without our
    ``meta.json`` is refused rather than deleted.

    Returns:
        dict: ``data_root``, ``params``, ``generated`` (False if skipped) and, when generated,
        ``class_pixels`` (per-class pixel counts per split).
    """
    check_counts('generate_concept_dataset', num_train, num_val, size)
    data_root = osp.abspath(data_root)
    params = dict(num_train=int(num_train), num_val=int(num_val), seed=int(seed),
                  size=int(size), version=GENERATOR_VERSION)
    class_pixels = {}

    def write(tmp):
        for split in SPLITS:
            counts = write_split(tmp, split, params[f'num_{split}'],
                                 lambda i: render_concept_sample(seed, split, i, size),
                                 len(CONCEPT_SEG_CLASSES))
            class_pixels[split] = counts.tolist()
        seen, unseen = get_zero_shot_split('concepts')
        with open(osp.join(tmp, META_FILE), 'w') as f:
            json.dump(dict(params=params, classes=list(CONCEPT_SEG_CLASSES),
                           unseen=[CONCEPT_SEG_CLASSES[i] for i in unseen],
                           class_pixels=class_pixels), f, indent=1)

    if not generate_atomically(data_root, params, 'generated concept dataset', write):
        return dict(data_root=data_root, params=params, generated=False)
    return dict(data_root=data_root, params=params, generated=True, class_pixels=class_pixels)


@DATASETS.register_module()
class ConceptSegDataset(BaseSegDataset):
    """The benchmark written by :func:`generate_concept_dataset` (55 classes, background
    real, ``.png`` images and labels). Use ``data_prefix=dict(img_path='img_dir/train',
    seg_map_path='ann_dir/train')`` (or ``val``)."""
    METAINFO = dict(classes=CONCEPT_SEG_CLASSES, palette=_palette())

    def __init__(self, img_suffix='.png', seg_map_suffix='.png', reduce_zero_label=False,
                 **kwargs) -> None:
        super().__init__(img_suffix=img_suffix, seg_map_suffix=seg_map_suffix,
                         reduce_zero_label=reduce_zero_label, **kwargs)


def _check_registered_vocabulary():
    """The registered vocabulary file must list exactly these classes (import-time check)."""
    names = tuple(get_vocabulary('concepts'))
    if names != CONCEPT_SEG_CLASSES:
        raise RuntimeError('mmseg_ovseg/clip/vocabularies/concepts.txt does not match '
                           'CONCEPT_SEG_CLASSES of mmseg_ovseg/datasets/concept_seg.py')


_check_registered_vocabulary()
