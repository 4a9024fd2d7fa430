# SAN ViT-B/16 on COCO-Stuff-164k (171 classes), the paper's recipe (Xu et al., CVPR 2023,
# Sec. 4.1; official MendelXu/SAN config and log):
# - model (configs/_base_/models/san_vit-b16.py): CLIP ViT-B/16 frozen except its visual
#   position embedding, at 0.5x; side adapter of 8 blocks x 240 with 100 queries; Hungarian
#   loss (class 2, mask BCE 5, dice 5, 12544 points, no-object 0.1).
# - 640x640 crops, batch 32 = 8 GPUs x 4 images (or 4 x 8), AdamW lr 1e-4 wd 1e-4 (no decay
#   on position/query embeddings and norms), poly 0.9 over 60k iterations, grad-norm clip
#   0.01 on the whole model, AMP.
# - test: whole image, shortest side 640 (max 2560), padded to a multiple of 32; 14 'vild'
#   prompt templates.
# Local CLIP weights: an OpenAI ViT-B/16 checkpoint (e.g. open_clip's 'openai' ViT-B-16 file)
# at `clip_pretrained`; nothing is downloaded at run time.
_base_ = [
    '_base_/models/san_vit-b16.py', 'mmseg::_base_/datasets/coco-stuff164k.py',
    '_base_/default_runtime.py'
]

# ------------------------------------------------------------------ data
# COCO-Stuff-164k as mmseg's _base_/datasets/coco-stuff164k.py (dataset, splits, samplers,
# workers, mIoU) with SAN's pipelines: shortest-edge jitter 320..960 (max 2560) and 640 crops
# in training, shortest side 640 at test; CLIP's mean/std come from the data_preprocessor.
crop_size = (640, 640)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(
        type='RandomChoiceResize',
        scales=[int(640 * x * 0.1) for x in range(5, 16)],  # shortest edge 320..960
        resize_type='ResizeShortestEdge',
        max_size=2560),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=1.0),
    dict(type='PhotoMetricDistortion'),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeShortestEdge', scale=crop_size, max_size=2560),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs')
]
train_dataloader = dict(
    batch_size=4,  # x 8 GPUs = 32 (or batch_size=8 x 4 GPUs)
    dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

# ------------------------------------------------------------------ schedule
max_iters = 60000
optim_wrapper = dict(
    type='AmpOptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=1e-4),
    paramwise_cfg=dict(
        norm_decay_mult=0.0,
        custom_keys={
            'positional_embedding': dict(decay_mult=0.0),  # CLIP's (the one trained part)
            'pos_embed': dict(decay_mult=0.0),
            'query_embed': dict(decay_mult=0.0),
            'query_pos_embed': dict(decay_mult=0.0),
        }),
    loss_scale='dynamic',
    clip_grad=dict(max_norm=0.01, norm_type=2))
param_scheduler = [
    dict(type='PolyLR', eta_min=0.0, power=0.9, begin=0, end=max_iters, by_epoch=False)
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(by_epoch=False, interval=10000, max_keep_ckpts=2),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='OVSegVisualizationHook'))  # labels: the model's vocabulary
auto_scale_lr = dict(enable=False, base_batch_size=32)

# Test-time augmentation (tools/test.py --tta; mmseg's SegTTAModel averages the softmax of the
# scores): the test resize at 0.75 / 1 / 1.25 of its short side x horizontal flip, with the
# test pipeline's image and annotation loaders.
tta_pipeline = [
    test_pipeline[0],
    dict(
        type='TestTimeAug',
        transforms=[
            [dict(test_pipeline[1], scale=int(crop_size[0] * r)) for r in (0.75, 1.0, 1.25)],
            [dict(type='RandomFlip', prob=p, direction='horizontal') for p in (0.0, 1.0)],
            [test_pipeline[2]],
            [test_pipeline[3]],
        ])
]
