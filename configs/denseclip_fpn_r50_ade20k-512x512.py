# DenseCLIP (Rao et al., CVPR 2022) RN50 + Semantic FPN on ADE20K-150, the official recipe
# (raoyongming/DenseCLIP segmentation/configs/denseclip_fpn_res50_512x512_80k.py):
# 512x512 crops, AdamW lr 1e-4 / wd 1e-4, backbone lr x0.1, text encoder lr x0 (its tower is
# also frozen by requires_grad=False; only the context vectors train, at lr x1 as the official
# top-level `contexts`), no weight decay on `norm` parameters, 1500 linear warmup iterations then
# poly (power 0.9, min lr 1e-6), 80k iterations, batch 4 per GPU x 8 GPUs = 32 in total
# (reproduction gaps were reported with smaller total batches).
# Paper/README (ADE20K val, single scale / multi-scale): 43.5 / 44.7 mIoU.
# Weights: CLIP RN50 (OpenAI `RN50.pt`) in pretrained/. Train with
#   bash tools/dist_train.sh configs/denseclip_fpn_r50_ade20k-512x512.py 8
# (on a single GPU the SyncBN layers are reverted to BN by mmengine; the total batch then
# differs from the official one).
# Model: configs/_base_/models/denseclip_r50.py.
_base_ = [
    '_base_/models/denseclip_r50.py', 'mmseg::_base_/datasets/ade20k.py',
    '_base_/default_runtime.py'
]

# ---------------------------------------------------------------- data
# ADE20K exactly as mmseg's _base_/datasets/ade20k.py (512x512 crops of 2048x512 resizes,
# mIoU); CLIP's mean/std are applied by the model base's data_preprocessor.
train_dataloader = dict(batch_size=4)  # per GPU; x 8 GPUs = 32 (official)

# ---------------------------------------------------------------- schedule
max_iters = 80000
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=1e-4),
    # mmengine applies the longest matching key only: `text_encoder.contexts` (the official
    # top-level `contexts`) keeps lr x1 while the rest of the text encoder gets x0.
    paramwise_cfg=dict(custom_keys={
        'backbone': dict(lr_mult=0.1),
        'text_encoder': dict(lr_mult=0.0),
        'text_encoder.contexts': dict(lr_mult=1.0),
        'norm': dict(decay_mult=0.0)
    }))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    # overlapping schedulers compose: warm-up x poly over all iterations, as mmcv 1.x's poly
    # with linear warm-up (simulated: within 0.2% of the official lr for the head groups and
    # 1.2% for the backbone group, whose min_lr is relatively larger)
    dict(type='PolyLR', eta_min=1e-6, power=0.9, begin=0, end=max_iters, by_epoch=False)
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=8000)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(by_epoch=False, interval=8000, max_keep_ckpts=2),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='OVSegVisualizationHook'))  # labels: the model's vocabulary
# Official: backbone BatchNorms converted to SyncBN (they train), unused-parameter search on.
sync_bn = 'torch'
find_unused_parameters = True
auto_scale_lr = dict(enable=False, base_batch_size=32)
