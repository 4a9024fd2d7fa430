# SegViT ViT-L/16 on ADE20K-150, the official recipe (zbwxp/SegVit
# configs/segvit/segvit_vit-l_jax_640x640_160k_ade20k.py). README: 54.6 mIoU single-scale,
# 55.2 multi-scale, 637.9 GFLOPs.
# - backbone: mmseg VisionTransformer ViT-L/16 (24 layers, 1024 wide, 16 heads) with the patch
#   embedding bias of mmseg 0.x (patch_bias=True), Segmenter's IN-21k "jax" weights converted
#   by mmseg, drop_path 0.3, no class token, no final norm; levels out_indices (7, 15, 23)
#   (layers 8, 16, 24);
# - ATM head: embed 512 (= 1024 // 2), 16 heads, 3 ATM layers per level;
# - ATM loss: CE 1 (no object 0.1), focal 20, dice 1, on every level (deep supervision);
# - AdamW lr 2e-5, weight decay 0.01, head lr x10, no decay on norms ('norm'/'ln'), no layer
#   decay; linear warmup 1500 iters (from 1e-6) on a poly (power 1.0) to 0; grad clip 35;
# - 160k iterations, 2 images per GPU on 4 GPUs -> total batch 8 (the README trains with
#   tools/dist_train.sh, which starts 4 processes; the repo also has a dist_train_8.sh);
#   test: slide 640 / stride 608.
# Weights: https://download.openmmlab.com/mmsegmentation/v0.5/pretrain/segmenter/
#   vit_large_p16_384_20220308-d4efb41d.pth -> pretrained/ (keys already mmseg's).
_base_ = ['mmseg::_base_/datasets/ade20k_640x640.py', '_base_/default_runtime.py']

crop_size = (640, 640)
num_classes = 150
data_preprocessor = dict(
    type='SegDataPreProcessor',
    mean=[127.5, 127.5, 127.5],
    std=[127.5, 127.5, 127.5],
    bgr_to_rgb=True,
    pad_val=0,
    seg_pad_val=255,
    size=crop_size)
model = dict(
    type='EncoderDecoder',
    data_preprocessor=data_preprocessor,
    backbone=dict(
        # mmseg's VisionTransformer; its pretrained load fails on keys that do not fit
        type='StrictVisionTransformer',
        img_size=crop_size,
        patch_size=16,
        patch_bias=True,  # mmseg 0.x (official) patch embedding has a bias; 1.x default: none
        in_channels=3,
        embed_dims=1024,
        num_layers=24,
        num_heads=16,
        mlp_ratio=4,
        out_indices=(7, 15, 23),
        drop_rate=0.0,
        attn_drop_rate=0.0,
        drop_path_rate=0.3,
        norm_cfg=dict(type='LN', eps=1e-6, requires_grad=True),
        with_cls_token=False,
        final_norm=False,
        interpolate_mode='bicubic',
        init_cfg=dict(type='Pretrained',
                      checkpoint='pretrained/vit_large_p16_384_20220308-d4efb41d.pth',
                      # Segmenter's final norm (timm 'norm.' -> 'ln1.'): unused without
                      # final_norm; any other key that does not fit is an error
                      ignore_unexpected=['ln1.'])),
    decode_head=dict(
        type='ATMHead',
        in_channels=1024,
        num_classes=num_classes,
        embed_dims=512,
        num_layers=3,
        num_heads=16,
        use_stages=3,
        loss_decode=dict(type='ATMLoss', loss_cls_weight=1.0, loss_mask_weight=20.0,
                         no_object_weight=0.1)),
    train_cfg=dict(),
    test_cfg=dict(mode='slide', crop_size=crop_size, stride=(608, 608)))

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
