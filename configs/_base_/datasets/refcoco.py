# RefCOCO (UNC splits) referring segmentation in the REFER layout, with ReSTR's input recipe
# (docs/restr.md): 480x480 letterboxed inputs, mean = std = 0.5 (x255), no flipping (it
# would swap "left"/"right" in the expressions). One sample per (ref, sentence).
#
# Layout under data_root (the `refer` toolkit's):
#   refcoco/refs(unc).p, refcoco/instances.json
#   refcoco+/refs(unc).p, refcoco+/instances.json
#   refcocog/refs(google).p (ReSTR's G-Ref: val only) or refs(umd).p (val/test)
#   images/mscoco/images/train2014/COCO_train2014_*.jpg
# Other datasets: override ann_file / instances_file, e.g.
#   --cfg-options val_dataloader.dataset.ann_file='refcoco+/refs(unc).p' \
#                 val_dataloader.dataset.instances_file='refcoco+/instances.json'
# Splits: RefCOCO/RefCOCO+ val, testA, testB; RefCOCOg (umd) val, test; (google) val.
# Test on another split with --cfg-options test_dataloader.dataset.split=testA.
dataset_type = 'RefCOCODataset'
data_root = 'data/refer'
ann_file = 'refcoco/refs(unc).p'
instances_file = 'refcoco/instances.json'
img_prefix = dict(img_path='images/mscoco/images/train2014')
crop_size = (480, 480)

# For model configs: ReSTR normalises with mean = std = 0.5 on [0, 1] RGB and pads every
# input to 480x480 (test predictions are cropped back and resized to the original image).
data_preprocessor = dict(
    type='SegDataPreProcessor',
    mean=[127.5, 127.5, 127.5],
    std=[127.5, 127.5, 127.5],
    bgr_to_rgb=True,
    pad_val=0,
    seg_pad_val=255,
    size=crop_size,
    test_cfg=dict(size=crop_size))  # test inputs padded too

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadReferringAnnotation'),
    # letterbox: longer side to 480, keep the aspect ratio, pad to 480x480
    dict(type='Resize', scale=crop_size, keep_ratio=True),
    dict(type='Pad', size=crop_size, pad_val=dict(img=0, seg=255)),
    dict(type='PackReferringInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=crop_size, keep_ratio=True),
    # loaded after Resize: the metric compares at the original image size
    dict(type='LoadReferringAnnotation'),
    dict(type='PackReferringInputs')
]
train_dataloader = dict(
    batch_size=8,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        ann_file=ann_file,
        instances_file=instances_file,
        data_prefix=img_prefix,
        split='train',
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        ann_file=ann_file,
        instances_file=instances_file,
        data_prefix=img_prefix,
        split='val',
        pipeline=test_pipeline))
test_dataloader = val_dataloader

# ReSTR selects checkpoints by overall IoU: use save_best='oIoU' in the checkpoint hook.
val_evaluator = dict(type='ReferringIoUMetric', thresholds=(0.5, 0.6, 0.7, 0.8, 0.9))
test_evaluator = val_evaluator
