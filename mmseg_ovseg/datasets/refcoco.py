"""RefCOCO / RefCOCO+ / RefCOCOg referring segmentation in the standard REFER layout.

Files (as distributed with the ``refer`` toolkit; ``data_root`` e.g. ``data/refer``)::

    refcoco/refs(unc).p       refcoco+/refs(unc).p       refcocog/refs(umd).p | refs(google).p
    refcoco/instances.json    refcoco+/instances.json    refcocog/instances.json
    images/mscoco/images/train2014/COCO_train2014_000000xxxxxx.jpg

- ``refs(*).p``: a (Python 2) pickle of a list of dicts, one per referred object::

      {'ref_id': int, 'ann_id': int, 'image_id': int, 'category_id': int,
       'split': 'train' | 'val' | 'testA' | 'testB' | 'test' | ...,
       'sentences': [{'sent_id': int, 'sent': str, 'raw': str, 'tokens': [str]}, ...],
       'sent_ids': [int], 'file_name': str}

  It is loaded with :func:`mmseg_ovseg.utils.load_plain_pickle` (no globals allowed).
  ``file_name`` there carries an ``_<ann_id>`` suffix; the image file name is taken from
  ``instances.json`` instead.
- ``instances.json``: COCO ``images`` (``id``, ``file_name``, ``height``, ``width``) and
  ``annotations`` (``id``, ``image_id``, ``segmentation``, ...); segmentations are polygon
  lists for RefCOCO* (RLE also accepted, see :mod:`mmseg_ovseg.datasets.coco_mask`).

One data sample per (ref, sentence) pair, as ReSTR trains and evaluates (every expression of
an object is a separate sample; RefCOCO UNC val has 10,834 of them). The binary target is the
referred object's whole segmentation (all its polygons merged), rasterised by
:class:`~mmseg_ovseg.datasets.transforms.LoadReferringAnnotation` (labels 0 background,
1 object).
"""
import json
import os.path as osp
from typing import Dict, List, Optional

from mmseg.datasets import BaseSegDataset
from mmseg.registry import DATASETS

from ..utils.safe_pickle import load_plain_pickle

REFERRING_SPLITS = ('train', 'val', 'test', 'testA', 'testB')
REQUIRED_REF_KEYS = ('ref_id', 'ann_id', 'image_id', 'split', 'sentences')


def ref_in_split(ref_split: str, split: str) -> bool:
    """Whether a ref whose ``split`` field is ``ref_split`` belongs to the requested split.

    ``train``/``val`` match exactly; ``test`` matches every test split (``test``, ``testA``,
    ``testB``, ...); ``testA``/``testB`` match test splits containing that letter (so
    ReferIt-style ``testAB`` refs count for both), as the ``refer`` toolkit does.
    """
    if split in ('train', 'val'):
        return ref_split == split
    if not ref_split.startswith('test'):
        return False
    return split == 'test' or split[-1] in ref_split[len('test'):]


@DATASETS.register_module()
class RefCOCODataset(BaseSegDataset):
    """Referring segmentation samples from a REFER refs pickle + COCO ``instances.json``.

    Each data info holds::

        img_path (str), sentence (str), sentences_of_ref (int, how many the ref has),
        ref_id, sent_id, ann_id, image_id, category_id (int), height, width (int, image size),
        segmentation (COCO polygons or RLE of the referred object),
        seg_fields ([]), reduce_zero_label (False), label_map (None)

    Args:
        ann_file (str): the refs pickle, e.g. ``'refcoco/refs(unc).p'`` (relative to
            ``data_root``).
        instances_file (str): the COCO annotations, e.g. ``'refcoco/instances.json'``
            (relative to ``data_root`` unless absolute).
        split (str): one of :data:`REFERRING_SPLITS`.
        sentence_key (str): ``'sent'`` (the toolkit's cleaned, lower-cased expression) or
            ``'raw'`` (as typed by the annotator).
        data_prefix (dict): ``img_path`` is the COCO train2014 image folder.
        **kwargs: :class:`mmseg.datasets.BaseSegDataset` arguments.

    Raises:
        FileNotFoundError: a missing refs pickle, instances file (at load time).
        ValueError: an unknown split, a split with no refs in this file, or refs/annotations
            that are malformed or inconsistent (the message names the file and the ref id).
    """
    METAINFO = dict(classes=('background', 'object'), palette=[[0, 0, 0], [255, 255, 255]])

    def __init__(self,
                 ann_file: str,
                 instances_file: str,
                 split: str = 'val',
                 sentence_key: str = 'sent',
                 data_prefix: Optional[dict] = None,
                 reduce_zero_label: bool = False,
                 **kwargs) -> None:
        if split not in REFERRING_SPLITS:
            raise ValueError(f'RefCOCODataset: unknown split {split!r}; expected one of '
                             f'{REFERRING_SPLITS}')
        if sentence_key not in ('sent', 'raw'):
            raise ValueError(f"RefCOCODataset: sentence_key must be 'sent' or 'raw', got "
                             f'{sentence_key!r}')
        if reduce_zero_label:
            raise ValueError('RefCOCODataset: reduce_zero_label is meaningless for 0/1 masks')
        self.split = split
        self.sentence_key = sentence_key
        data_root = kwargs.get('data_root')
        if data_root and not osp.isabs(instances_file):
            instances_file = osp.join(data_root, instances_file)
        self.instances_file = instances_file
        super().__init__(ann_file=ann_file,
                         data_prefix=data_prefix or dict(img_path=''),
                         reduce_zero_label=False,
                         **kwargs)

    def _load_refs(self) -> List[dict]:
        if not osp.isfile(self.ann_file):
            raise FileNotFoundError(f'RefCOCODataset: refs pickle {self.ann_file} not found')
        refs = load_plain_pickle(self.ann_file)
        if not isinstance(refs, list):
            raise ValueError(f'{self.ann_file}: expected a list of ref dicts, got '
                             f'{type(refs).__name__}')
        for i, ref in enumerate(refs):
            if not isinstance(ref, dict):
                raise ValueError(f'{self.ann_file}: entry {i} is a {type(ref).__name__}, '
                                 'not a dict')
            missing = [k for k in REQUIRED_REF_KEYS if k not in ref]
            if missing:
                raise ValueError(f'{self.ann_file}: ref {ref.get("ref_id", f"#{i}")} lacks '
                                 f'keys {missing}')
        return refs

    def _load_instances(self) -> Dict[str, Dict[int, dict]]:
        if not osp.isfile(self.instances_file):
            raise FileNotFoundError(
                f'RefCOCODataset: instances file {self.instances_file} not found')
        with open(self.instances_file) as f:
            try:
                coco = json.load(f)
            except ValueError as e:
                raise ValueError(f'{self.instances_file}: not valid JSON ({e})') from e
        for key in ('images', 'annotations'):
            if key not in coco:
                raise ValueError(f'{self.instances_file}: no {key!r} list')
        return dict(images={img['id']: img for img in coco['images']},
                    annotations={ann['id']: ann for ann in coco['annotations']})

    def load_data_list(self) -> List[dict]:
        """One info dict per (ref, sentence) of the split, in refs-file order."""
        refs = self._load_refs()
        coco = self._load_instances()
        img_dir = self.data_prefix.get('img_path', '')
        data_list = []
        for ref in refs:
            if not ref_in_split(str(ref['split']), self.split):
                continue
            ref_id = ref['ref_id']
            ann = coco['annotations'].get(ref['ann_id'])
            if ann is None:
                raise ValueError(f'{self.ann_file}: ref {ref_id} points to annotation '
                                 f'{ref["ann_id"]}, absent from {self.instances_file}')
            if ann.get('image_id') != ref['image_id']:
                raise ValueError(f'{self.ann_file}: ref {ref_id} is on image {ref["image_id"]} '
                                 f'but annotation {ann["id"]} is on image {ann.get("image_id")}')
            img = coco['images'].get(ref['image_id'])
            if img is None:
                raise ValueError(f'{self.ann_file}: ref {ref_id} points to image '
                                 f'{ref["image_id"]}, absent from {self.instances_file}')
            if 'segmentation' not in ann:
                raise ValueError(f'{self.instances_file}: annotation {ann["id"]} (ref {ref_id}) '
                                 'has no segmentation')
            sentences = ref['sentences']
            if not sentences:
                raise ValueError(f'{self.ann_file}: ref {ref_id} has no sentences')
            for sent in sentences:
                if self.sentence_key not in sent:
                    raise ValueError(f'{self.ann_file}: ref {ref_id} sentence '
                                     f'{sent.get("sent_id")} has no {self.sentence_key!r}')
                data_list.append(dict(
                    img_path=osp.join(img_dir, img["file_name"]),
                    sentence=sent[self.sentence_key],
                    sentences_of_ref=len(sentences),
                    ref_id=ref_id,
                    sent_id=sent.get('sent_id'),
                    ann_id=ref['ann_id'],
                    image_id=ref['image_id'],
                    category_id=ref.get('category_id', ann.get('category_id')),
                    height=int(img['height']),
                    width=int(img['width']),
                    segmentation=ann['segmentation'],
                    label_map=None,
                    reduce_zero_label=False,
                    seg_fields=[]))
        if not data_list:
            present = sorted({str(r['split']) for r in refs})
            raise ValueError(f'{self.ann_file}: no refs in split {self.split!r} (the file has '
                             f'splits {present})')
        return data_list
