"""LoadWideAnnotations: label maps with more than 255 classes survive loading and scoring."""
import cv2
import numpy as np
import pytest
import torch
from mmengine.structures import PixelData
from mmseg.evaluation import IoUMetric
from mmseg.registry import TRANSFORMS
from mmseg.structures import SegDataSample


def _write16(path, arr):
    assert cv2.imwrite(str(path), arr.astype(np.uint16))


def test_wide_labels_keep_class_ids_above_255(tmp_path):
    label = np.array([[0, 300, 846], [65535, 255, 300]], dtype=np.uint16)
    _write16(tmp_path / 'a.png', label)
    load = TRANSFORMS.build(dict(type='LoadWideAnnotations'))
    res = load(dict(seg_map_path=str(tmp_path / 'a.png'), reduce_zero_label=False,
                    seg_fields=[]))
    np.testing.assert_array_equal(res['gt_seg_map'], label.astype(np.int64))
    # mmseg's own loader wraps them (the bug this transform exists for).
    plain = TRANSFORMS.build(dict(type='LoadAnnotations'))(
        dict(seg_map_path=str(tmp_path / 'a.png'), reduce_zero_label=False, seg_fields=[]))
    assert plain['gt_seg_map'][0, 1] == 300 % 256

    # Scored with the ignore index the configs use: 65535 ignored, 255 a real class.
    metric = IoUMetric(ignore_index=65535, iou_metrics=['mIoU'])
    metric.dataset_meta = dict(classes=[f'c{i}' for i in range(847)])
    pred = torch.tensor([[0, 300, 0], [7, 255, 300]])
    sample = SegDataSample(
        gt_sem_seg=PixelData(data=torch.from_numpy(res['gt_seg_map'])[None]),
        pred_sem_seg=PixelData(data=pred[None]))
    metric.process([], [sample.to_dict()])
    area_intersect, area_union = metric.results[0][0], metric.results[0][1]
    assert area_union.sum() == 5 + 1  # 5 labelled pixels; the 846 pixel predicted as 0
    assert area_intersect[300] == 2 and area_intersect[255] == 1 and area_intersect[0] == 1


def test_wide_labels_mapping_and_errors(tmp_path):
    _write16(tmp_path / 'b.png', np.array([[1, 65535]]))
    load = TRANSFORMS.build(dict(type='LoadWideAnnotations', ignore_index=255))
    res = load(dict(seg_map_path=str(tmp_path / 'b.png'), reduce_zero_label=False,
                    seg_fields=[], label_map={1: 2}))
    np.testing.assert_array_equal(res['gt_seg_map'], [[2, 255]])
    cv2.imwrite(str(tmp_path / 'rgb.png'), np.zeros((2, 2, 3), np.uint8))
    with pytest.raises(ValueError, match='rgb.png.*channels'):
        load(dict(seg_map_path=str(tmp_path / 'rgb.png'), reduce_zero_label=False,
                  seg_fields=[]))
    with pytest.raises(ValueError, match='reduce_zero_label'):
        TRANSFORMS.build(dict(type='LoadWideAnnotations', reduce_zero_label=True))
