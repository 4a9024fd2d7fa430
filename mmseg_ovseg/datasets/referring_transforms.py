"""Pipeline steps for referring segmentation samples (:class:`RefCOCODataset` infos).

- :class:`LoadReferringAnnotation` rasterises the referred object's COCO segmentation into
  ``gt_seg_map`` (``uint8 (H, W)``, 0 background, 1 object) at the original image size.
- :class:`PackReferringInputs` is mmseg's ``PackSegInputs`` whose default ``meta_keys`` also
  carry the expression (``sentence``) and the ids into ``data_samples[i].metainfo``, where a
  text-conditioned model reads them.
"""
import numpy as np
from mmcv.transforms import BaseTransform
from mmseg.datasets.transforms import PackSegInputs
from mmseg.registry import TRANSFORMS

from .coco_mask import segmentation_to_mask

REFERRING_META_KEYS = ('sentence', 'ref_id', 'sent_id', 'ann_id', 'image_id', 'category_id')


@TRANSFORMS.register_module()
class LoadReferringAnnotation(BaseTransform):
    """Binary target of a referring sample from its ``segmentation`` (polygons or RLE).

    Required keys: ``segmentation``, ``height``, ``width`` (the COCO image size), and
    ``sentence`` (checked, kept unchanged). Added: ``gt_seg_map`` ``uint8 (height, width)``
    0/1; ``'gt_seg_map'`` appended to ``seg_fields``.

    Raises:
        KeyError: a required key is missing (the message names it and the ref id).
        ValueError: a malformed segmentation, or an image already loaded whose size differs
            from the annotation's ``height``/``width``.
    """

    def transform(self, results: dict) -> dict:
        ref = f"ref {results.get('ref_id')} (ann {results.get('ann_id')}, " \
              f"{results.get('img_path')})"
        for key in ('segmentation', 'height', 'width', 'sentence'):
            if key not in results:
                raise KeyError(f'LoadReferringAnnotation: {ref} has no {key!r}; use it with '
                               'RefCOCODataset infos')
        h, w = int(results['height']), int(results['width'])
        if 'ori_shape' in results and tuple(results['ori_shape'][:2]) != (h, w):
            raise ValueError(f'LoadReferringAnnotation: {ref}: image is '
                             f'{tuple(results["ori_shape"][:2])} but the annotation says '
                             f'{(h, w)}')
        mask = segmentation_to_mask(results['segmentation'], h, w, source=ref)
        results['gt_seg_map'] = mask.astype(np.uint8)
        results.setdefault('seg_fields', [])
        if 'gt_seg_map' not in results['seg_fields']:
            results['seg_fields'].append('gt_seg_map')
        return results


@TRANSFORMS.register_module()
class PackReferringInputs(PackSegInputs):
    """``PackSegInputs`` whose metainfo also holds :data:`REFERRING_META_KEYS`.

    ``data_samples.metainfo['sentence']`` is the referring expression (str).
    Passing ``meta_keys`` replaces the whole list, as in mmseg.
    """

    def __init__(self, meta_keys=None):
        if meta_keys is None:
            meta_keys = tuple(PackSegInputs().meta_keys) + REFERRING_META_KEYS
        super().__init__(meta_keys=meta_keys)
