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
_base_ = ['mmseg::_base_/datasets/ade20k.py', '_base_/default_runtime.py']

crop_size = (512, 512)
num_classes = 150
clip_pretrained = 'pretrained/RN50.pt'
norm_cfg = dict(type='SyncBN', requires_grad=True)

data_preprocessor = dict(
    type='SegDataPreProcessor',
    # CLIP's normalisation
    mean=[122.7709383, 116.7460125, 104.09373615],
    std=[68.5005327, 66.6321579, 70.32316305],
    bgr_to_rgb=True,
    pad_val=0,
    seg_pad_val=255,
    size=crop_size)
model = dict(
    type='DenseCLIP',
    data_preprocessor=data_preprocessor,
    vocabulary='ade150',  # raw class names (no template), each <= 3 BPE tokens
    backbone=dict(
        type='CLIPResNetWithAttention',
        # OpenAI's RN50 and the official text encoder use QuickGELU; open_clip's plain 'RN50'
        # builds nn.GELU in the text tower (the CLIP loader refuses OpenAI weights for it)
        clip_model='RN50-quickgelu',
        pretrained=clip_pretrained,
        input_resolution=512,  # attnpool position grid 7x7 -> 16x16 at load, as official
        out_indices=(0, 1, 2, 3),
        output_attnpool=True,
        frozen=False),
    text_encoder=dict(
        type='ContextCLIPTextEncoder',
        clip_model='RN50-quickgelu',
        pretrained=clip_pretrained,
        num_contexts=8,
        context_length=13,  # [SOT, 8 contexts, <= 3 name tokens, EOT]
        name_suffix='',
        init_std=1.0),
    context_decoder=dict(
        type='ContextDecoder',
        visual_dim=1024,
        embed_dims=256,
        num_heads=4,
        num_layers=3,
        dropout=0.1,
        gamma_init=1e-4),
    score_concat_index=3,
    tau=0.07,
    neck=dict(
        type='FPN', in_channels=[256, 512, 1024, 2048 + num_classes], out_channels=256,
        num_outs=4),
    decode_head=dict(
        type='FPNHead',
        in_channels=[256, 256, 256, 256],
        in_index=[0, 1, 2, 3],
        feature_strides=[4, 8, 16, 32],
        channels=256,
        dropout_ratio=0.1,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    identity_head=dict(
        type='IdentityHead',
        align_corners=False,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=0.4)),
    train_cfg=dict(),
    test_cfg=dict(mode='slide', crop_size=crop_size, stride=(341, 341)))

# ---------------------------------------------------------------- data
# ADE20K exactly as mmseg's _base_/datasets/ade20k.py (512x512 crops of 2048x512 resizes,
# mIoU); CLIP's mean/std are applied by the data_preprocessor above.
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
