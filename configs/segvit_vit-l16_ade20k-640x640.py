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
    '_base_/default_runtime.py', '_base_/schedules/schedule_segvit_160k.py'
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

# Schedule: configs/_base_/schedules/schedule_segvit_160k.py. Hooks: the runtime's, with
# checkpoints every 16k iterations and mmseg's visualizer (a closed-vocabulary model).
default_hooks = dict(
    checkpoint=dict(by_epoch=False, interval=16000, max_keep_ckpts=2),
    visualization=dict(type='SegVisualizationHook'))
