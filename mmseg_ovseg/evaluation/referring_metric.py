"""Referring segmentation metric: overall IoU, mean IoU and Prec@K (all in percent).

Per sample (one referring expression), with ``valid = gt != ignore_index``::

    I = |pred == 1  and  gt == 1  and valid|      U = |(pred == 1 or gt == 1) and valid|

- ``oIoU`` (overall / cumulative IoU, the number ReSTR and most referring papers report):
  ``sum(I) / sum(U)`` over the split, so large objects weigh more.
- ``mIoU``: mean over samples of ``I / U`` (every expression weighs the same). Not the
  semantic-segmentation mIoU over classes.
- ``Prec@K`` for K in ``thresholds``: share of samples with ``I / U >= K``.

A sample with ``U == 0`` (empty target, nothing predicted) scores IoU 1: it was answered
correctly. RefCOCO* targets are never empty.

``process`` stores one ``(I, U)`` pair of ints per sample; mmengine gathers these lists from
all ranks (in dataset order) before :meth:`compute_metrics`, so the sums and means are exact
under distributed evaluation.
"""
from collections import OrderedDict
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch
from mmengine.evaluator import BaseMetric
from mmengine.logging import MMLogger, print_log
from mmseg.registry import METRICS


@METRICS.register_module()
class ReferringIoUMetric(BaseMetric):
    """oIoU / mIoU / Prec@K of binary referring masks.

    Reads ``pred_sem_seg.data`` (``(1, H, W)`` label map, foreground = 1) and
    ``gt_sem_seg.data`` (``(1, H, W)``, 0/1 with ``ignore_index`` for unlabelled pixels) of
    each data sample; the two must have the same size (mmseg's ``postprocess_result`` resizes
    the prediction back to the original image).

    Args:
        ignore_index (int): ground-truth value excluded from both I and U.
        thresholds (Sequence[float]): IoU thresholds of the ``Prec@K`` keys.
        collect_device (str): ``'cpu'`` or ``'gpu'``, see :class:`BaseMetric`.
        prefix (str, optional): key prefix, see :class:`BaseMetric`.

    Returns (from ``evaluate``): ``{'oIoU', 'mIoU', 'Prec@0.5', ..., 'Prec@0.9'}`` floats in
    percent rounded to 2 decimals.
    """

    def __init__(self,
                 ignore_index: int = 255,
                 thresholds: Sequence[float] = (0.5, 0.6, 0.7, 0.8, 0.9),
                 collect_device: str = 'cpu',
                 prefix: str = None,
                 **kwargs) -> None:
        super().__init__(collect_device=collect_device, prefix=prefix)
        if kwargs:
            raise TypeError(f'ReferringIoUMetric: unexpected arguments {sorted(kwargs)}')
        if not thresholds or any(not 0 < t <= 1 for t in thresholds):
            raise ValueError(f'ReferringIoUMetric: thresholds must be in (0, 1], got '
                             f'{thresholds}')
        self.ignore_index = ignore_index
        self.thresholds = tuple(float(t) for t in thresholds)

    @staticmethod
    def intersection_union(pred: torch.Tensor, gt: torch.Tensor,
                           ignore_index: int) -> Tuple[int, int]:
        """``(I, U)`` of one sample; ``pred``/``gt`` are label maps of the same shape."""
        if pred.shape != gt.shape:
            raise ValueError(f'ReferringIoUMetric: prediction {tuple(pred.shape)} and ground '
                             f'truth {tuple(gt.shape)} differ in size')
        valid = gt != ignore_index
        p = (pred == 1) & valid
        g = (gt == 1) & valid
        return int((p & g).sum()), int((p | g).sum())

    def process(self, data_batch: dict, data_samples: Sequence[dict]) -> None:
        for sample in data_samples:
            pred = sample['pred_sem_seg']['data'].squeeze()
            gt = sample['gt_sem_seg']['data'].squeeze().to(pred.device)
            self.results.append(self.intersection_union(pred, gt, self.ignore_index))

    def compute_metrics(self, results: List[Tuple[int, int]]) -> Dict[str, float]:
        if not results:
            raise ValueError('ReferringIoUMetric: no samples were processed')
        inter = np.array([r[0] for r in results], np.float64)
        union = np.array([r[1] for r in results], np.float64)
        iou = np.where(union > 0, inter / np.maximum(union, 1), 1.0)
        metrics = OrderedDict()
        metrics['oIoU'] = inter.sum() / union.sum() if union.sum() > 0 else 1.0
        metrics['mIoU'] = iou.mean()
        for t in self.thresholds:
            metrics[f'Prec@{t:g}'] = (iou >= t).mean()
        metrics = OrderedDict((k, round(float(v) * 100, 2)) for k, v in metrics.items())
        print_log(f'referring segmentation over {len(results)} samples: ' +
                  ', '.join(f'{k} {v:.2f}' for k, v in metrics.items()),
                  logger=MMLogger.get_current_instance())
        return dict(metrics)
