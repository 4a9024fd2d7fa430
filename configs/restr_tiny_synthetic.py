# ReSTR (Kim et al., CVPR 2022) at tiny widths on the synthetic referring data: a CPU demo of
# the whole method -- mmseg's VisionTransformer (random init), the word-vocabulary language
# transformer, the visual-linguistic + linguistic-seed fusion encoder with the adaptive
# classifier, the coarse-to-fine decoder and the pixel + 0.1 x patch BCE loss.
# Data and vocabulary (once):
#   .venv/bin/python -c "from mmseg_ovseg.datasets import generate_referring_dataset as g; \
#     g('data/synthetic_referring', splits=dict(train=200, val=50, testA=25, testB=25))"
#   .venv/bin/python tools/dataset_converters/build_word_vocab.py 'data/synthetic_referring/refsyn/refs(unc).p' \
#     --out data/synthetic_referring/refsyn/vocab.txt
# Train: .venv/bin/python tools/train.py configs/restr_tiny_synthetic.py
# Measured (30 Nov 2026, ViT LayerNorm eps 1e-5): 2000 iterations; synthetic val oIoU 79.25,
# mIoU 73.17 (testA 78.27 / 72.65); docs/restr.md.
_base_ = [
    '_base_/datasets/synthetic_referring.py', '_base_/default_runtime.py'
]

crop_size = (64, 64)
patch_size = 8
vocab_file = 'data/synthetic_referring/refsyn/vocab.txt'
model = dict(
    type='ReSTR',
    # the base dataset config's: mean = std = 0.5 (x255), train and test inputs
    # padded to crop_size (ReSTR.predict crops the padding off again)
    data_preprocessor={{_base_.data_preprocessor}},
    backbone=dict(
        type='VisionTransformer',
        img_size=crop_size,
        patch_size=patch_size,
        embed_dims=64,
        num_layers=4,
        num_heads=2,
        mlp_ratio=4,
        out_indices=-1,
        drop_path_rate=0.0,
        patch_bias=True,
        with_cls_token=True,
        output_cls_token=False,
        final_norm=True,
        norm_cfg=dict(type='LN', eps=1e-5),  # as the official ViT (nn.LayerNorm default)
        interpolate_mode='bicubic'),  # as the 480 config (inputs are padded: no resize)
    language_encoder=dict(
        type='ReSTRLanguageEncoder',
        vocab_file=vocab_file,
        embed_dims=32,
        out_dims=64,
        num_layers=2,
        num_heads=2,
        max_len=10),
    fusion=dict(
        type='ReSTRFusionEncoder',
        visual_dims=64,
        language_dims=64,
        embed_dims=64,
        num_layers=2,
        num_heads=2,
        drop_path_rate=0.0),
    # 8x8 patch grid -> 3 doublings back to 64x64 (2^3 = patch size)
    decoder=dict(type='ReSTRCoarseToFineDecoder', in_channels=128, num_upsamples=3),
    loss=dict(type='ReSTRLoss', patch_size=patch_size, patch_weight=0.1),
    train_cfg=dict(),
    test_cfg=dict(mode='whole'))

optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-3, betas=(0.9, 0.999), weight_decay=5e-4),
    clip_grad=dict(max_norm=1.0))
max_iters = 2000
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0, end=max_iters // 10),
    dict(type='PolyLR', eta_min=0.0, power=0.9, begin=max_iters // 10, end=max_iters,
         by_epoch=False)
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(by_epoch=False, interval=max_iters,
                    max_keep_ckpts=1, save_best='oIoU', rule='greater'),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='SegVisualizationHook'))
randomness = dict(seed=0)
