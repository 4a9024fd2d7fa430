# SegViT ViT-L/16 on COCO-Stuff-10k (171 classes), the official recipe (zbwxp/SegVit
# configs/segvit/segvit_vit-l_jax_512x512_80k_cocostuff10k.py with its dataset base
# configs/_base_/datasets/coco-stuff10k.py). README: 49.9 mIoU single-scale, 50.3 multi-scale,
# 383.9 GFLOPs. Model and schedule: the ADE20K bases (_base_/models/segvit_vit-l16.py,
# _base_/schedules/schedule_segvit_160k.py: ViT-L/16 with the mmseg 0.x patch bias, Segmenter's
# IN-21k weights, drop path 0.3, levels (7, 15, 23), ATM head embed 512 / 16 heads / 3 layers
# per level, ATM loss), with what differs from ADE20K:
# - 171 classes, labels with reduce_zero_label (mmseg's COCO-Stuff-10k layout, as official);
# - 512 crops (ViT img_size 512) of (2048, 512) resizes x 0.5-2; test: shortest side 512 with
#   no cap on the long side (official Resize(keep_ratio, min_size=512)), slide 512 / 341;
# - AdamW weight decay 0.02 (ADE 0.01), poly power 2.0 (ADE 1.0), 80k iterations (ADE 160k);
#   lr 2e-5, head lr x10, no decay on norms, 1500 warm-up iterations, grad clip 35 as ADE;
# - 2 images per GPU x 4 GPUs = batch 8, as ADE.
_base_ = [
    '_base_/models/segvit_vit-l16.py', 'mmseg::_base_/datasets/coco-stuff10k.py',
    '_base_/default_runtime.py', '_base_/schedules/schedule_segvit_160k.py'
]

crop_size = (512, 512)
num_classes = 171
data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(img_size=crop_size),
    decode_head=dict(num_classes=num_classes),
    test_cfg=dict(mode='slide', crop_size=crop_size, stride=(341, 341)))

# Data: mmseg's _base_/datasets/coco-stuff10k.py (splits train2014/test2014, 0 = unlabeled ->
# ignored, mIoU) with the official pipelines.
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='RandomResize', scale=(2048, 512), ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    # shortest side 512, long side unbounded: mmseg 0.x Resize(img_scale=(2048, 512),
    # keep_ratio=True, min_size=512) of the official test pipeline
    dict(type='ResizeShortestEdge', scale=512, max_size=1 << 20),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs')
]
train_dataloader = dict(
    batch_size=2,  # x 4 GPUs = 8 (official samples_per_gpu=2)
    dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

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

optim_wrapper = dict(optimizer=dict(weight_decay=0.02))
max_iters = 80000
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', eta_min=0.0, power=2.0, begin=0, end=max_iters, by_epoch=False)
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=8000)
default_hooks = dict(
    checkpoint=dict(by_epoch=False, interval=8000, max_keep_ckpts=2),
    visualization=dict(type='SegVisualizationHook'))
