# Cross-dataset test of the COCO-Stuff-trained SAN ViT-B/16 on Pascal Context-459 (SAN
# Table 1): vocabulary 'pc459', whole image at shortest side 640. Test only.
# Data: the detectron2 preparation (JPEGImages + annotations_detectron2/pc459_val/*.tif with
# 16-bit labels 0..458, 65535 = ignore).
# mmseg 1.2.2's LoadAnnotations casts labels to uint8, which cannot hold these classes:
# LoadWideAnnotations keeps them, and the metric ignores 65535 (255 is a real class here).
_base_ = ['./san_vitb16_coco-stuff.py']

model = dict(vocabulary='pc459')
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeShortestEdge', scale=(640, 640), max_size=2560),
    dict(type='LoadWideAnnotations', ignore_value=65535, ignore_index=65535),
    dict(type='PackSegInputs')
]
val_dataloader = dict(
    batch_size=1,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        _delete_=True,
        type='BaseSegDataset',
        data_root='data/VOCdevkit/VOC2010',
        data_prefix=dict(img_path='JPEGImages', seg_map_path='annotations_detectron2/pc459_val'),
        ann_file='ImageSets/SegmentationContext/val.txt',
        img_suffix='.jpg',
        seg_map_suffix='.tif',
        metainfo=dict(classes=tuple(f'pc459_{i}' for i in range(459))),
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(_delete_=True, type='IoUMetric', iou_metrics=['mIoU'], ignore_index=65535)
test_evaluator = val_evaluator

# Test-time augmentation (tools/test.py --tta; mmseg's SegTTAModel averages the softmax of the
# scores): the test resize at 0.75 / 1 / 1.25 of its short side x horizontal flip, with the
# test pipeline's image and annotation loaders.
tta_pipeline = [
    test_pipeline[0],
    dict(
        type='TestTimeAug',
        transforms=[
            [dict(test_pipeline[1], scale=int(640 * r)) for r in (0.75, 1.0, 1.25)],
            [dict(type='RandomFlip', prob=p, direction='horizontal') for p in (0.0, 1.0)],
            [test_pipeline[2]],
            [test_pipeline[3]],
        ])
]
