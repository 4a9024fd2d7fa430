# The generated zero-shot segmentation benchmark over the tiny CLIP's concept space
# (mmseg_ovseg/datasets/concept_seg.py): 55 classes (background, 8 colours x 6 shapes, 6 object
# kinds), 128x128 RGB, 1000 train / 250 val images in data/concepts, written by tools/demo.py,
# tools/misc/run_open_vocab_ablations.py or generate_concept_dataset(). Split 'concepts': 9
# unseen classes (8 novel colour-shape compositions and 'flower'), whose pixels the inductive
# training pipeline ignores (ZeroShotLabelMapping); evaluation is on all 55 classes with
# pAcc / mIoU(S) / mIoU(U) / hIoU (ZeroShotIoUMetric).
dataset_type = 'ConceptSegDataset'
data_root = 'data/concepts'
zero_shot_split = 'concepts'
crop_size = (128, 128)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='RandomResize', scale=(128, 128), ratio_range=(0.75, 1.5), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size),
    dict(type='RandomFlip', prob=0.5),
    # seen class i -> label i (the seen-class text order), unseen -> 255 (ignored)
    dict(type='ZeroShotLabelMapping', split=zero_shot_split, mode='inductive'),
    dict(type='PackSegInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(128, 128), keep_ratio=True),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs')
]
# In-process loading (2-core CPU: loader workers compete with the model for the cores).
train_dataloader = dict(
    batch_size=8,
    num_workers=0,
    persistent_workers=False,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_prefix=dict(img_path='img_dir/train', seg_map_path='ann_dir/train'),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1,
    num_workers=0,
    persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_prefix=dict(img_path='img_dir/val', seg_map_path='ann_dir/val'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='ZeroShotIoUMetric', split=zero_shot_split, iou_metrics=['mIoU'])
test_evaluator = val_evaluator
# Test-time augmentation (tools/test.py --tta): 3 scales (96, 128, 160 px: multiples of 16 for
# SAN's padding) x horizontal flip; no concept depends on left/right.
tta_img_ratios = [0.75, 1.0, 1.25]
tta_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(
        type='TestTimeAug',
        transforms=[
            [dict(type='Resize', scale_factor=r, keep_ratio=True) for r in tta_img_ratios],
            [
                dict(type='RandomFlip', prob=0., direction='horizontal'),
                dict(type='RandomFlip', prob=1., direction='horizontal')
            ],
            [dict(type='LoadAnnotations')],
            [dict(type='PackSegInputs')],
        ])
]
