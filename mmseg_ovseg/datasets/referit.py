"""ReferIt (ReferItGame, images of SAIAPR TC-12) in the layout the official ReSTR code reads.

Files (``data_root`` e.g. ``data/referit``; the official README takes images and masks from
``referitdata.tar.gz`` of Hu et al.'s text_objseg, queries from the same project)::

    referit_query_trainval.json  referit_query_test.json   # the split files
    images/<image id>.jpg                                  # e.g. images/8756.jpg
    mask/<image id>_<region id>.mat                        # e.g. mask/8756_2.mat

- ``referit_query_<split>.json``: a JSON object mapping a region name ``'<image id>_<region
  id>'`` to the list of its expressions (plain strings). The image is the part before the
  first ``_`` + ``.jpg``; the mask is ``<name>.mat`` (official ``build_batches.py``).
- ``<name>.mat``: a MATLAB (v5) file holding ``segimg_t``, a 2-D array of the image's size;
  the region is ``segimg_t == 0`` (official ``utils/io.py`` ``load_referit_gt_mask``).

One sample per (region, expression), as the official batches; the split is the query file
(official splits: ``trainval`` for training, ``test`` for validation and testing). The
binary target is read by :class:`LoadReferItMask` (labels 0 background, 1 object), and the
samples carry the same keys as :class:`~mmseg_ovseg.datasets.RefCOCODataset`'s, so
``PackReferringInputs``, ReSTR and ``ReferringIoUMetric`` use them unchanged.
"""
import json
import os.path as osp
from collections import Counter
from typing import List, Optional, Sequence

import numpy as np
from mmcv.transforms import BaseTransform
from mmseg.datasets import BaseSegDataset
from mmseg.registry import DATASETS, TRANSFORMS

from ..models.language.word_vocab import PAD_TOKEN, UNK_TOKEN, WordVocabulary, split_words
from .refcoco import RefCOCODataset

REFERIT_MASK_KEY = 'segimg_t'


def load_referit_queries(path: str) -> dict:
    """The ``{region name: [expression, ...]}`` dict of a ReferIt query file, checked.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not JSON, not an object of non-empty string lists, or a region name that is
            not ``<image id>_<region id>`` (the message names the file and the region).
    """
    if not osp.isfile(path):
        raise FileNotFoundError(f'ReferIt query file {path} not found')
    with open(path, encoding='utf-8') as f:
        try:
            queries = json.load(f)
        except ValueError as e:
            raise ValueError(f'{path}: not valid JSON ({e})') from e
    if not isinstance(queries, dict):
        raise ValueError(f'{path}: expected a JSON object {{"<image id>_<region id>": '
                         f'[expressions]}}, got a {type(queries).__name__}')
    for name, sents in queries.items():
        if '_' not in name or not name.split('_', 1)[0]:
            raise ValueError(f'{path}: region name {name!r} is not "<image id>_<region id>"')
        if not isinstance(sents, list) or not sents:
            raise ValueError(f'{path}: region {name!r} has no list of expressions '
                             f'(got {sents!r:.60})')
        for s in sents:
            if not isinstance(s, str):
                raise ValueError(f'{path}: region {name!r} has a non-string expression '
                                 f'{s!r:.60}')
    return queries


def load_referit_mask(path: str) -> np.ndarray:
    """The 0/1 ``uint8 (H, W)`` region mask of a ReferIt ``.mat`` file (``segimg_t == 0``).

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a readable MATLAB file, no ``segimg_t``, or not 2-D (names the file).
    """
    if not osp.isfile(path):
        raise FileNotFoundError(f'ReferIt mask {path} not found')
    import scipy.io  # only needed here
    try:
        mat = scipy.io.loadmat(path)
    except Exception as e:  # noqa: BLE001  (scipy raises several types for bad files)
        raise ValueError(f'{path}: not a readable MATLAB .mat file '
                         f'({type(e).__name__}: {e})') from e
    if REFERIT_MASK_KEY not in mat:
        keys = sorted(k for k in mat if not k.startswith('__'))
        raise ValueError(f'{path}: no {REFERIT_MASK_KEY!r} array (it holds {keys})')
    seg = np.asarray(mat[REFERIT_MASK_KEY])
    if seg.ndim != 2:
        raise ValueError(f'{path}: {REFERIT_MASK_KEY!r} has shape {seg.shape}, expected '
                         '(height, width)')
    return (seg == 0).astype(np.uint8)


@DATASETS.register_module()
class ReferItDataset(BaseSegDataset):
    """ReferIt referring segmentation samples from a query file and per-region ``.mat`` masks.

    Each data info holds the :class:`RefCOCODataset` keys that do not need COCO files::

        img_path (str), mask_path (str, the region's .mat), sentence (str),
        sentences_of_ref (int), ref_id (str, the region name), sent_id (int, index in the
        region's list), ann_id (str, the region name), image_id (str), category_id (None),
        seg_fields ([]), reduce_zero_label (False), label_map (None)

    Args:
        ann_file (str): the query file, e.g. ``'referit_query_test.json'`` (relative to
            ``data_root``); it defines the split.
        data_prefix (dict): ``img_path`` (the image folder) and ``mask_path`` (the ``.mat``
            folder), relative to ``data_root``.
        **kwargs: :class:`mmseg.datasets.BaseSegDataset` arguments.

    Raises:
        FileNotFoundError: a missing query file (at load time).
        ValueError: a malformed query file (names the file and region).
    """
    METAINFO = RefCOCODataset.METAINFO

    def __init__(self,
                 ann_file: str,
                 data_prefix: Optional[dict] = None,
                 reduce_zero_label: bool = False,
                 **kwargs) -> None:
        if reduce_zero_label:
            raise ValueError('ReferItDataset: reduce_zero_label is meaningless for 0/1 masks')
        super().__init__(ann_file=ann_file,
                         data_prefix=data_prefix or dict(img_path='images', mask_path='mask'),
                         reduce_zero_label=False,
                         **kwargs)

    def load_data_list(self) -> List[dict]:
        """One info dict per (region, expression), in query-file order."""
        queries = load_referit_queries(self.ann_file)
        if not queries:
            raise ValueError(f'{self.ann_file}: no regions')
        img_dir = self.data_prefix.get('img_path', '')
        mask_dir = self.data_prefix.get('mask_path', '')
        data_list = []
        for name, sents in queries.items():
            image_id = name.split('_', 1)[0]
            for i, sent in enumerate(sents):
                data_list.append(dict(
                    img_path=osp.join(img_dir, image_id + '.jpg'),
                    mask_path=osp.join(mask_dir, name + '.mat'),
                    sentence=sent,
                    sentences_of_ref=len(sents),
                    ref_id=name,
                    sent_id=i,
                    ann_id=name,
                    image_id=image_id,
                    category_id=None,
                    label_map=None,
                    reduce_zero_label=False,
                    seg_fields=[]))
        return data_list


@TRANSFORMS.register_module()
class LoadReferItMask(BaseTransform):
    """Binary target of a ReferIt sample from its ``.mat`` mask (``segimg_t == 0``).

    Required keys: ``mask_path``, ``sentence``. Added: ``gt_seg_map`` ``uint8 (H, W)`` 0/1;
    ``'gt_seg_map'`` appended to ``seg_fields``. Use it after ``LoadImageFromFile`` (and, in
    the test pipeline, after ``Resize``, so the metric compares at the original size).

    Raises:
        KeyError: a required key is missing.
        FileNotFoundError / ValueError: see :func:`load_referit_mask`; also a mask whose size
            differs from the loaded image's (names both).
    """

    def transform(self, results: dict) -> dict:
        for key in ('mask_path', 'sentence'):
            if key not in results:
                raise KeyError(f'LoadReferItMask: sample {results.get("img_path")} has no '
                               f'{key!r}; use it with ReferItDataset infos')
        mask = load_referit_mask(results['mask_path'])
        if 'ori_shape' in results and tuple(results['ori_shape'][:2]) != mask.shape:
            raise ValueError(f'LoadReferItMask: {results["mask_path"]} is {mask.shape} but '
                             f'image {results.get("img_path")} is '
                             f'{tuple(results["ori_shape"][:2])}')
        results['gt_seg_map'] = mask
        results.setdefault('seg_fields', [])
        if 'gt_seg_map' not in results['seg_fields']:
            results['seg_fields'].append('gt_seg_map')
        return results


def count_referit_words(query_files: Sequence[str]) -> Counter:
    """Word counts over every expression of ReferIt query files (tokenised as ReSTR's
    language encoder, :func:`split_words`)."""
    counts: Counter = Counter()
    for path in query_files:
        for sents in load_referit_queries(path).values():
            for s in sents:
                counts.update(split_words(s))
    return counts


def build_vocab_from_referit(query_files: Sequence[str], out_file: Optional[str] = None,
                             min_count: int = 1) -> WordVocabulary:
    """Vocabulary of the words of ReferIt query files occurring at least ``min_count`` times,
    most frequent first (ties alphabetical), as ``build_vocab_from_refs`` orders REFER words;
    written to ``out_file`` if given."""
    if isinstance(query_files, str):
        query_files = [query_files]
    counts = count_referit_words(query_files)
    words = sorted((w for w, c in counts.items()
                    if c >= min_count and w not in (PAD_TOKEN, UNK_TOKEN)),
                   key=lambda w: (-counts[w], w))
    vocab = WordVocabulary(words, source=', '.join(query_files))
    if out_file is not None:
        vocab.save(out_file)
    return vocab
