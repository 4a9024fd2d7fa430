"""Generalised zero-shot segmentation metric: pAcc, mIoU of seen / unseen classes, hIoU.

`ZegCLIP <https://arxiv.org/abs/2212.03588>`_, Sec. 4.1 "Evaluation metrics" (after SPNet /
ZS3Net): predictions are made over *all* classes; pixel accuracy (pAcc), the mean IoU of the
seen classes mIoU(S), of the unseen classes mIoU(U), and their harmonic mean
``hIoU = 2 * mIoU(S) * mIoU(U) / (mIoU(S) + mIoU(U))``. The official code computes hIoU by hand
from the printed numbers; here it is a metric key, usable as ``val_evaluator`` of any config
(and for ``save_best='hIoU'``).

Accumulation and the per-class IoU/Acc are mmseg's :class:`IoUMetric`'s; this class only adds
the seen/unseen split and a per-class table with a split column.
"""
from collections import OrderedDict
from typing import Dict, Sequence, Union

import numpy as np
from mmengine.logging import MMLogger, print_log
from mmseg.evaluation.metrics import IoUMetric
from mmseg.registry import METRICS
from prettytable import PrettyTable

from ..clip.vocabularies import get_zero_shot_split


def harmonic_iou(seen: float, unseen: float) -> float:
    """``2 S U / (S + U)``; 0 when both are 0, NaN when either is NaN."""
    if np.isnan(seen) or np.isnan(unseen):
        return float('nan')
    return 0.0 if seen + unseen == 0 else 2 * seen * unseen / (seen + unseen)


@METRICS.register_module()
class ZeroShotIoUMetric(IoUMetric):
    """IoU metric reporting ``pAcc``, ``mIoU``, ``mIoU_seen``, ``mIoU_unseen``, ``hIoU``.

    Values are percentages rounded to 2 decimals, as mmseg's. Classes absent from both the
    ground truth and the predictions (NaN IoU) are left out of the means.

    Args:
        split (str | list[int] | dict): the zero-shot split (any spec of
            :func:`mmseg_ovseg.clip.vocabularies.get_zero_shot_split`), in the label space of
            the evaluated dataset.
        **kwargs: :class:`IoUMetric` arguments (``ignore_index``, ``iou_metrics``,
            ``prefix``, ...).
    """

    def __init__(self, split: Union[str, Sequence[int], dict], **kwargs):
        super().__init__(**kwargs)
        self.split = split

    def _seen_unseen(self, num_classes: int):
        seen, unseen = get_zero_shot_split(self.split, num_classes)
        if not seen or not unseen:
            raise ValueError(f'ZeroShotIoUMetric: split {self.split!r} needs seen and unseen '
                             'classes')
        return seen, unseen

    def compute_metrics(self, results: list) -> Dict[str, float]:
        """Metrics from the per-image ``(intersect, union, pred_area, label_area)`` tuples."""
        logger: MMLogger = MMLogger.get_current_instance()
        if self.format_only:
            return super().compute_metrics(results)
        class_names = list(self.dataset_meta['classes'])
        seen, unseen = self._seen_unseen(len(class_names))
        totals = [sum(r) for r in zip(*results)]
        ret = self.total_area_to_metrics(*totals, self.metrics, self.nan_to_num, self.beta)
        if 'IoU' not in ret:
            raise ValueError("ZeroShotIoUMetric needs 'mIoU' in iou_metrics")
        iou, acc = ret['IoU'], ret['Acc']

        def pct(x):  # float64 first: float32 areas would print as 72.7300033...
            return round(float(x) * 100, 2)

        miou_s, miou_u = np.nanmean(iou[seen]), np.nanmean(iou[unseen])
        metrics = OrderedDict(
            pAcc=pct(ret['aAcc']),
            mIoU=pct(np.nanmean(iou)),
            mAcc=pct(np.nanmean(acc)),
            mIoU_seen=pct(miou_s),
            mIoU_unseen=pct(miou_u),
            hIoU=pct(harmonic_iou(miou_s, miou_u)))

        table = PrettyTable()
        unseen_set = set(unseen)
        table.add_column('Class', class_names)
        table.add_column('Split', ['unseen' if i in unseen_set else 'seen'
                                   for i in range(len(class_names))])
        for key in ('IoU', 'Acc'):
            table.add_column(key, np.round(ret[key].astype(np.float64) * 100, 2).tolist())
        print_log('per class results:', logger)
        print_log('\n' + table.get_string(), logger=logger)
        return dict(metrics)
