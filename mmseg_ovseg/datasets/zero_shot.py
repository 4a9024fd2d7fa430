"""Label mapping of the zero-shot semantic segmentation protocol.

`ZegCLIP <https://arxiv.org/abs/2212.03588>`_, Sec. 4.1 (following ZS3Net / SPNet): models are
trained on the pixels of the *seen* classes only.

- Inductive: seen class ``seen_idx[i]`` becomes label ``i`` (the text embeddings of training
  are those of the seen classes, in the same order) and every other label (the unseen classes)
  becomes ``ignore_index``. Neither names nor pixels of unseen classes reach the model.
- Transductive (self-training): seen labels keep their index in the full vocabulary and unseen
  pixels get :data:`PSEUDO_LABEL`, to be filled by the segmentor with its own prediction over
  the unseen classes (``ZegCLIP(self_training=True)``). As in the official code, the pixels to
  pseudo-label are those annotated with an unseen class.

Place the transform after the geometric augmentations (``RandomCrop``'s ``cat_max_ratio``
should still see the original classes) and before ``PackSegInputs``. Evaluation pipelines
never remap: metrics see all classes.
"""
from typing import Optional, Sequence, Union

import numpy as np
from mmcv.transforms import BaseTransform
from mmseg.registry import TRANSFORMS

from ..clip.vocabularies import get_zero_shot_split

# Marks pixels of unseen classes for pseudo-labelling (never a valid class index).
PSEUDO_LABEL = -1


@TRANSFORMS.register_module()
class ZeroShotLabelMapping(BaseTransform):
    """Remap ``gt_seg_map`` for zero-shot training.

    Required keys: ``gt_seg_map``. Modified keys: ``gt_seg_map`` (``uint8`` in inductive
    mode; ``int16`` in transductive mode, which needs the negative :data:`PSEUDO_LABEL`).

    Args:
        split (str | list[int] | dict): the split, any spec of
            :func:`mmseg_ovseg.clip.vocabularies.get_zero_shot_split` (``'voc20'``,
            ``'coco_stuff171'``, ``'pc59'``, ``'synthetic'``, unseen indices, or
            ``dict(unseen=..., seen=...)``).
        num_classes (int, optional): size of the full vocabulary, needed when ``split`` is
            given by indices without ``seen``.
        mode (str): ``'inductive'`` or ``'transductive'``.
        ignore_index (int): label of ignored pixels; kept as is. Default: 255.
    """

    def __init__(self,
                 split: Union[str, Sequence[int], dict],
                 num_classes: Optional[int] = None,
                 mode: str = 'inductive',
                 ignore_index: int = 255):
        super().__init__()
        if mode not in ('inductive', 'transductive'):
            raise ValueError(f"mode must be 'inductive' or 'transductive', got {mode!r}")
        if not 0 <= ignore_index <= 255:
            raise ValueError(f'ignore_index must fit uint8 labels, got {ignore_index}')
        seen, unseen = get_zero_shot_split(split, num_classes)
        if not unseen:
            raise ValueError(f'split {split!r} has no unseen classes')
        self.seen_idx, self.unseen_idx = list(seen), list(unseen)
        self.mode = mode
        self.ignore_index = ignore_index
        # A 256-entry look-up table: labels are uint8 maps (0..255).
        lut = np.full(256, ignore_index, dtype=np.int16)
        if mode == 'inductive':
            lut[self.seen_idx] = np.arange(len(self.seen_idx))
        else:
            lut[self.seen_idx] = self.seen_idx
            lut[self.unseen_idx] = PSEUDO_LABEL
        lut[ignore_index] = ignore_index
        self.lut = lut

    def transform(self, results: dict) -> dict:
        seg = results.get('gt_seg_map')
        if seg is None:
            raise KeyError('ZeroShotLabelMapping needs gt_seg_map: put it after '
                           'LoadAnnotations in a training pipeline')
        seg = np.asarray(seg)
        if seg.dtype.kind not in 'iu' or (seg.size and (seg.min() < 0 or seg.max() > 255)):
            raise ValueError(f'gt_seg_map must hold labels in 0..255, got dtype {seg.dtype}')
        out = self.lut[seg.astype(np.int64)]
        results['gt_seg_map'] = out.astype(np.uint8) if self.mode == 'inductive' else out
        return results

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(mode={self.mode!r}, seen={self.seen_idx}, '
                f'unseen={self.unseen_idx}, ignore_index={self.ignore_index})')
