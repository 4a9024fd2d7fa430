# SAN (side adapter network, Xu et al. CVPR 2023) at tiny widths on the synthetic shapes data:
# a CPU demo of the whole method (asymmetric CLIP input, fusion, attention-biased SLS
# recognition, Hungarian mask-classification loss with deep supervision). CLIP is randomly
# initialised here, so unlike the paper it is trainable (frozen=False).
# The `make demo` model (tools/demo.py): 1000 iterations, synthetic val mIoU 87.20 (700
# iterations: 81.75; the baseline's 200: 84.56); ~0.2 s per iteration on 2 quiet CPU cores.
_base_ = [
    '_base_/datasets/synthetic.py', '_base_/default_runtime.py',
    '_base_/schedules/schedule_synthetic.py'
]

crop_size = (128, 128)
clip_model = dict(
    embed_dim=64,
    quick_gelu=False,
    vision_cfg=dict(image_size=64, layers=4, width=64, head_width=32, patch_size=8),
    text_cfg=dict(context_length=77, vocab_size=49408, width=64, heads=2, layers=2))

data_preprocessor = dict(
    type='SegDataPreProcessor',
    mean=[122.771, 116.746, 104.094],
    std=[68.501, 66.632, 70.323],
    bgr_to_rgb=True,
    pad_val=0,
    seg_pad_val=255,
    size=crop_size,
    test_cfg=dict(size_divisor=16))
model = dict(
    type='SAN',
    data_preprocessor=data_preprocessor,
    vocabulary='synthetic',
    templates='single',
    clip_scale=0.5,  # 128 -> 64: an 8x8 CLIP grid with patch 8
    fusion_layers=(0, 1, 2, 3),
    split_layer=3,
    backbone=dict(
        type='CLIPVisionTransformer', clip_model=clip_model, pretrained=None, frozen=False),
    text_encoder=dict(
        type='OVCLIPTextEncoder', clip_model=clip_model, pretrained=None),
    decode_head=dict(
        type='SANHead',
        side_adapter=dict(
            embed_dims=64, depth=4, num_heads=2, patch_size=8, num_queries=16,
            pos_grid=(16, 16), clip_channels=64, fusion_index=(0, 1, 2, 3)),
        mask_decoder=dict(embed_channels=32, mlp_channels=32, num_mlp_layers=3),
        bias_decoder=dict(num_heads=2, embed_channels=32, mlp_channels=32, num_mlp_layers=3),
        text_channels=64,
        deep_supervision_idxs=(3, ),
        loss_decode=dict(type='MaskClassificationLoss', num_points=1024)),
    train_cfg=dict(),
    test_cfg=dict(mode='whole'))

optim_wrapper = dict(
    optimizer=dict(type='AdamW', lr=5e-4, betas=(0.9, 0.999), weight_decay=1e-4),
    paramwise_cfg=dict(norm_decay_mult=0.0, custom_keys={
        'embed': dict(decay_mult=0.0)}),
    clip_grad=dict(max_norm=1.0))
max_iters = 1000
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=50),
    dict(type='PolyLR', eta_min=0.0, power=0.9, begin=50, end=max_iters, by_epoch=False)
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    checkpoint=dict(by_epoch=False, interval=max_iters, max_keep_ckpts=1))
# 2-core CPU: load in the main process. With loader workers the SAN step slowed from ~0.2 s
# to 1.4-3.4 s per iteration here (workers and the model's threads fight for the 2 cores);
# the synthetic images are small, so loading costs ~0.02 s per batch.
randomness = dict(seed=0)
