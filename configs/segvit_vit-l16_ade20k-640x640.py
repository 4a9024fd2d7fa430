# SegViT ViT-L/16 on ADE20K-150, the official recipe (zbwxp/SegVit
# configs/segvit/segvit_vit-l_jax_640x640_160k_ade20k.py). README: 54.6 mIoU single-scale,
# 55.2 multi-scale, 637.9 GFLOPs.
# - model (configs/_base_/models/segvit_vit-l16.py): mmseg ViT-L/16 with Segmenter's IN-21k
#   weights, levels 8/16/24 into the ATM head (embed 512, 16 heads, 3 layers per level), ATM
#   loss (CE 1 with no-object 0.1, focal 20, dice 1) on every level;
# - AdamW lr 2e-5, weight decay 0.01, head lr x10, no decay on norms ('norm'/'ln'), no layer
#   decay; linear warmup 1500 iters (from 1e-6) on a poly (power 1.0) to 0; grad clip 35;
# - 160k iterations, 2 images per GPU on 4 GPUs -> total batch 8 (the README trains with
#   tools/dist_train.sh, which starts 4 processes; the repo also has a dist_train_8.sh);
#   test: slide 640 / stride 608.
# Weights: https://download.openmmlab.com/mmsegmentation/v0.5/pretrain/segmenter/
#   vit_large_p16_384_20220308-d4efb41d.pth -> pretrained/ (keys already mmseg's).
_base_ = [
    '_base_/models/segvit_vit-l16.py', 'mmseg::_base_/datasets/ade20k_640x640.py',
    '_base_/default_runtime.py'
]

crop_size = (640, 640)

# Data: mmseg's _base_/datasets/ade20k_640x640.py (dataset, splits, samplers, workers, mIoU)
# with this file's pipelines, which resize to (2048, 640) where mmseg's resize to (2560, 640).
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='RandomResize', scale=(2048, 640), ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(2048, 640), keep_ratio=True),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs')
]
train_dataloader = dict(
    batch_size=2, dataset=dict(reduce_zero_label=True, pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(reduce_zero_label=True, pipeline=test_pipeline))
test_dataloader = val_dataloader

optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=2e-5, betas=(0.9, 0.999), weight_decay=0.01),
    paramwise_cfg=dict(custom_keys={
        'norm': dict(decay_mult=0.0),
        'ln': dict(decay_mult=0.0),
        'head': dict(lr_mult=10.0)}),
    clip_grad=dict(max_norm=35, norm_type=2))
max_iters = 160000
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    # overlapping schedulers multiply: warm-up factor x poly over all iterations (mmcv 1.x's
    # poly with linear warm-up)
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=0, end=max_iters, by_epoch=False)
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=16000)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(by_epoch=False, interval=16000, max_keep_ckpts=2),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='SegVisualizationHook'))
# The official config sets it; every ATM parameter is used in each step, so it only costs time.
find_unused_parameters = True
# Reference total batch (4 GPUs x 2); enable with --auto-scale-lr on another GPU count.
auto_scale_lr = dict(enable=False, base_batch_size=8)
