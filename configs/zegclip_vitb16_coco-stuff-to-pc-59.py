# ZegCLIP cross-dataset test (official configs/cross_dataset/coco-to-context.py): the COCO-Stuff
# model of configs/zegclip_vitb16_coco-stuff-zs.py evaluated on PASCAL Context val with the
# Context vocabulary, every class scored alike (no seen/unseen split, no seen-class
# calibration: official novel_class = []). Test as the COCO config: shortest side 512 (long
# side unbounded), slide 512 / 426, the COCO config's 15-template ensemble.
# Classes: the official config names 60 classes (background included) and a dataset file
# (_base_/datasets/context_60_512x512.py) and text embeddings (context_multi.npy) that are not
# in the official repository. Here: PC-59 (mmseg's PascalContextDataset59, background ignored
# by reduce_zero_label, vocabulary 'pc59'), the benchmark of SAN's and tools/test_ov.py's
# tables. Test only:
#   python tools/test.py configs/zegclip_vitb16_coco-stuff-to-pc-59.py COCO_CHECKPOINT
_base_ = ['./zegclip_vitb16_coco-stuff-zs.py']

model = dict(vocabulary='pc59', zero_shot_split=None, self_training=False)

test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeShortestEdge', scale=512, max_size=1 << 20),
    dict(type='LoadAnnotations', reduce_zero_label=True),  # 0 = background -> ignored
    dict(type='PackSegInputs')
]
val_dataloader = dict(
    dataset=dict(
        _delete_=True,
        type='PascalContextDataset59',
        data_root='data/VOCdevkit/VOC2010',
        data_prefix=dict(img_path='JPEGImages', seg_map_path='SegmentationClassContext'),
        ann_file='ImageSets/SegmentationContext/val.txt',
        reduce_zero_label=True,
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
