# ZegCLIP cross-dataset test (official configs/cross_dataset/coco-to-voc.py): the COCO-Stuff
# model of configs/zegclip_vitb16_coco-stuff-zs.py (official: the inductive
# vpt_seg_zero_vit-b_512x512_80k_12_100_multi checkpoint) evaluated on PASCAL VOC 2012 val with
# the VOC vocabulary: 20 classes, background pixels ignored, every class scored alike (no
# seen/unseen split, no seen-class calibration: official novel_class = []). Text: one template
# 'a photo of a {}' (the official config loads voc12_single.npy, made with that template).
# Test as the COCO config: shortest side 512 (long side unbounded), slide 512 / 426. Test only:
#   python tools/test.py configs/zegclip_vitb16_coco-stuff-to-voc.py COCO_CHECKPOINT
# (tools/test_ov.py runs the same switch over all five SAN benchmarks.)
_base_ = ['./zegclip_vitb16_coco-stuff-zs.py']

model = dict(
    vocabulary='voc20',
    zero_shot_split=None,
    self_training=False,
    templates='zegclip_voc')

test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeShortestEdge', scale=512, max_size=1 << 20),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs')
]
val_dataloader = dict(
    dataset=dict(
        _delete_=True,
        type='PascalVOCDataset',
        data_root='data/VOCdevkit/VOC2012',
        # the 20 object classes: background (0) -> 255 through mmseg's label_map
        metainfo=dict(classes=(
            'aeroplane', 'bicycle', 'bird', 'boat', 'bottle', 'bus', 'car', 'cat', 'chair',
            'cow', 'diningtable', 'dog', 'horse', 'motorbike', 'person', 'pottedplant',
            'sheep', 'sofa', 'train', 'tvmonitor')),
        data_prefix=dict(img_path='JPEGImages', seg_map_path='SegmentationClass'),
        ann_file='ImageSets/Segmentation/val.txt',
        pipeline=test_pipeline))
test_dataloader = val_dataloader

# Test-time augmentation (tools/test.py --tta; mmseg's SegTTAModel averages the softmax of the
# scores): this file's test resize at 0.75 / 1 / 1.25 of its short side x horizontal flip, with
# the test pipeline's image and annotation loaders (not inherited: the base's resize and labels
# are another dataset's).
tta_pipeline = [
    test_pipeline[0],
    dict(
        type='TestTimeAug',
        transforms=[
            [dict(test_pipeline[1], scale=int(512 * r)) for r in (0.75, 1.0, 1.25)],
            [dict(type='RandomFlip', prob=p, direction='horizontal') for p in (0.0, 1.0)],
            [test_pipeline[2]],
            [test_pipeline[3]],
        ])
]
val_evaluator = dict(_delete_=True, type='IoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator
