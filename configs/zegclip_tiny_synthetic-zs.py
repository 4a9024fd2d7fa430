# Tiny CPU ZegCLIP on the synthetic shapes dataset with a seen/unseen split ('synthetic':
# 'orange ring' and 'cyan checker' unseen): inductive training on the 6 seen classes with the
# seen-class text only, zero-shot test on all 8 classes with seen-class calibration, reported as
# pAcc / mIoU(S) / mIoU(U) / hIoU. The CLIP towers are tiny and randomly initialised (no
# weights are downloaded), so the unseen-class text carries no knowledge: this config exercises
# the whole pipeline; it does not reproduce the paper's transfer.
_base_ = [
    '_base_/datasets/synthetic.py', '_base_/default_runtime.py',
    '_base_/schedules/schedule_synthetic.py'
]

clip_model = dict(
    embed_dim=64,
    quick_gelu=False,
    vision_cfg=dict(image_size=128, layers=4, width=128, head_width=32, patch_size=8),
    text_cfg=dict(context_length=77, vocab_size=49408, width=64, heads=2, layers=2))
zero_shot_split = 'synthetic'
crop_size = (128, 128)

data_preprocessor = dict(
    type='SegDataPreProcessor',
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    bgr_to_rgb=True,
    pad_val=0,
    seg_pad_val=255,
    size=crop_size)
model = dict(
    type='ZegCLIP',
    data_preprocessor=data_preprocessor,
    vocabulary='synthetic',
    templates='single',
    zero_shot_split=zero_shot_split,
    seen_calibration=0.1,
    backbone=dict(
        type='CLIPVisionTransformer',
        clip_model=clip_model,
        pretrained=None,
        # a random CLIP has nothing to preserve: train it with the prompts
        frozen=False,
        out_indices=(3, ),
        output_dense=True,
        normalize_dense=True,
        num_prompt_tokens=4,
        prompt_depth=4,
        prompt_dropout=0.1,
        # as the ViT-B configs; acts only on weights loaded through `pretrained` (none here)
        fold_class_embedding=True),
    text_encoder=dict(
        type='OVCLIPTextEncoder', clip_model=clip_model, pretrained=None),
    decode_head=dict(
        type='ZegCLIPHead',
        in_channels=64,
        channels=64,
        num_layers=3,
        num_heads=4,
        feedforward_channels=256,
        loss_decode=[
            dict(type='NonExclusiveFocalLoss', loss_weight=100.0),
            dict(type='NonExclusiveDiceLoss', loss_weight=1.0),
        ]),
    train_cfg=dict(),
    test_cfg=dict(mode='whole'))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='RandomResize', scale=(128, 128), ratio_range=(0.75, 1.5), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size),
    dict(type='RandomFlip', prob=0.5),
    dict(type='ZeroShotLabelMapping', split=zero_shot_split, mode='inductive'),
    dict(type='PackSegInputs')
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_evaluator = dict(type='ZeroShotIoUMetric', split=zero_shot_split, iou_metrics=['mIoU'])
test_evaluator = val_evaluator

max_iters = 600
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=50),
    dict(type='PolyLR', eta_min=1e-5, power=0.9, begin=50, end=max_iters, by_epoch=False)
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    checkpoint=dict(by_epoch=False, interval=max_iters, max_keep_ckpts=1))
randomness = dict(seed=0)
