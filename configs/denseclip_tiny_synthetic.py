# DenseCLIP (Rao et al., CVPR 2022) at tiny widths on the synthetic shapes data: a CPU demo of
# the whole method (CLIP ResNet with dense attention pooling, text encoder with 8 learnable
# contexts, context decoder, pixel-text score map concatenated to C5, mmseg FPN + FPNHead,
# auxiliary CE on score_map / tau). The CLIP towers are tiny and randomly initialised (nothing
# is downloaded), so, unlike the paper, the image tower trains at the full lr; the text tower
# stays frozen as in the paper (only the contexts train).
_base_ = [
    '_base_/datasets/synthetic.py', '_base_/default_runtime.py',
    '_base_/schedules/schedule_synthetic.py'
]

crop_size = (128, 128)
num_classes = 8  # 'synthetic' vocabulary
width = 16  # ResNet stem width: stages 64/128/256/512 channels
clip_model = dict(
    embed_dim=32,
    quick_gelu=True,  # QuickGELU as the official text encoder (OpenAI CLIP)
    vision_cfg=dict(image_size=128, layers=[1, 1, 1, 1], width=width, head_width=32),
    text_cfg=dict(context_length=77, vocab_size=49408, width=32, heads=2, layers=2))

data_preprocessor = dict(
    type='SegDataPreProcessor',
    mean=[122.771, 116.746, 104.094],
    std=[68.501, 66.632, 70.323],
    bgr_to_rgb=True,
    pad_val=0,
    seg_pad_val=255,
    size=crop_size,
    test_cfg=dict(size_divisor=32))
model = dict(
    type='DenseCLIP',
    data_preprocessor=data_preprocessor,
    vocabulary='synthetic',
    backbone=dict(
        type='CLIPResNetWithAttention', clip_model=clip_model, pretrained=None,
        out_indices=(0, 1, 2, 3), output_attnpool=True),
    text_encoder=dict(
        type='ContextCLIPTextEncoder', clip_model=clip_model, pretrained=None, num_contexts=8,
        context_length=13, name_suffix='', init_std=1.0),
    context_decoder=dict(
        type='ContextDecoder', visual_dim=32, embed_dims=32, num_heads=2, num_layers=2,
        dropout=0.1, gamma_init=1e-4),
    score_concat_index=3,
    tau=0.07,
    neck=dict(
        type='FPN', in_channels=[4 * width, 8 * width, 16 * width, 32 * width + num_classes],
        out_channels=32, num_outs=4),
    decode_head=dict(
        type='FPNHead',
        in_channels=[32, 32, 32, 32],
        in_index=[0, 1, 2, 3],
        feature_strides=[4, 8, 16, 32],
        channels=32,
        dropout_ratio=0.1,
        norm_cfg=dict(type='BN', requires_grad=True),
        align_corners=False,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    identity_head=dict(
        type='IdentityHead',
        align_corners=False,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=0.4)),
    train_cfg=dict(),
    test_cfg=dict(mode='whole'))

max_iters = 1000
optim_wrapper = dict(
    optimizer=dict(type='AdamW', lr=1e-3, betas=(0.9, 0.999), weight_decay=1e-4),
    paramwise_cfg=dict(custom_keys={
        'text_encoder': dict(lr_mult=0.0),
        'text_encoder.contexts': dict(lr_mult=1.0),
        'norm': dict(decay_mult=0.0)
    }),
    clip_grad=dict(max_norm=1.0))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=50),
    dict(type='PolyLR', eta_min=1e-5, power=0.9, begin=50, end=max_iters, by_epoch=False)
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    checkpoint=dict(by_epoch=False, interval=max_iters, max_keep_ckpts=1))
randomness = dict(seed=0)
