"""Transforms that mmseg 1.2.2 lacks for large-vocabulary benchmarks."""
import mmcv
import numpy as np
from mmengine import fileio
from mmseg.datasets.transforms import LoadAnnotations
from mmseg.registry import TRANSFORMS


@TRANSFORMS.register_module()
class LoadWideAnnotations(LoadAnnotations):
    """Load label maps with more than 255 classes (ADE20K-Full 847, Pascal Context 459).

    mmseg's ``LoadAnnotations`` casts labels to ``uint8``, which silently wraps class ids
    above 255. This loader keeps the file's integer values (16-bit TIFF/PNG as written by the
    detectron2 preparation of these datasets) as ``int64`` and maps ``ignore_value`` (65535
    there) to ``ignore_index``; set the evaluator's ``ignore_index`` to the same value
    (``IoUMetric(ignore_index=65535)``), since 255 is a real class here.

    Args:
        ignore_value (int): label value that marks unlabelled pixels in the files.
        ignore_index (int): value written for them.
        **kwargs: :class:`mmseg.datasets.transforms.LoadAnnotations` arguments
            (``reduce_zero_label`` is not supported).
    """

    def __init__(self, ignore_value: int = 65535, ignore_index: int = 65535, **kwargs):
        super().__init__(**kwargs)
        if self.reduce_zero_label:
            raise ValueError('LoadWideAnnotations does not support reduce_zero_label')
        self.ignore_value = ignore_value
        self.ignore_index = ignore_index

    def _load_seg_map(self, results: dict) -> None:
        path = results['seg_map_path']
        img_bytes = fileio.get(path, backend_args=self.backend_args)
        seg = mmcv.imfrombytes(img_bytes, flag='unchanged', backend=self.imdecode_backend)
        if seg is None or seg.ndim not in (2, 3):
            raise ValueError(f'{path}: not a readable label map')
        if seg.ndim == 3:
            raise ValueError(f'{path}: label map has {seg.shape[2]} channels; expected one '
                             'channel of class indices')
        if not np.issubdtype(seg.dtype, np.integer):
            raise ValueError(f'{path}: label map dtype {seg.dtype} is not an integer type')
        seg = seg.astype(np.int64)
        seg[seg == self.ignore_value] = self.ignore_index
        if results.get('label_map') is not None:
            mapped = seg.copy()
            for old_id, new_id in results['label_map'].items():
                mapped[seg == old_id] = new_id
            seg = mapped
        results['gt_seg_map'] = seg
        results['seg_fields'].append('gt_seg_map')
