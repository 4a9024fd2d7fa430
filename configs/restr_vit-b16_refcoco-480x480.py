# ReSTR (Kim et al., CVPR 2022) on RefCOCO (UNC), the official recipe (SouthFlame/restr
# train_restr.py, config.yml; docs/restr.md). Paper oIoU: val 67.22, testA 69.30, testB 64.45.
# - vision: ViT-B/16 (timm vit_base_patch16_384, IN-21k + IN-1k) at 480x480, position
#   embedding interpolated bicubically from 24x24 to 30x30 once at load (timm 0.6.11's
#   _load_weights, the version official restr.yaml pins; mmseg's VisionTransformer does it
#   when loading the 384 checkpoint), drop_path 0.1, mean = std = 0.5; class token dropped;
#   LayerNorm eps 1e-5 (the official ViT's nn.LayerNorm default, not timm's 1e-6);
# - language: word embedding 300-d (GloVe in the official code, fine-tuned; padding id 0),
#   T = 20, 6 post-norm blocks (12 heads, FFN 1200) with 1-D sinusoidal positions,
#   Linear(300 -> 768) + LayerNorm;
# - fusion: d = 768, 2 visual-linguistic + 2 linguistic-seed pre-norm blocks, 12 heads,
#   FFN 3072, drop_path 0.1; padded words masked (the official code does not mask them);
# - decoder: 4 x {bilinear x2, 1x1 conv halving}, 1536 -> 96 -> 1;
# - loss: pixel BCE + 0.1 x patch BCE, patch target = any object pixel in the 16x16 patch
#   (official "sum > 0.8");
# - AdamW lr 1e-5 (ViT lr x0.1), weight decay 5e-4, betas (0.9, 0.999); linear warmup over
#   10% of the iterations, then poly 0.9 to 0; 400k iterations (official NUM_STEPS) at batch 8
#   on ONE GPU (the official script is single-process: 1 GPU x 8 images); best checkpoint by
#   validation overall IoU.
# Files (local, no download at run time):
#   pretrained/vit_base_p16_384_20220308-96dfe169.pth: timm's vit_base_patch16_384 in mmseg's
#     key layout (mmseg's Segmenter release,
#     https://download.openmmlab.com/mmsegmentation/v0.5/pretrain/segmenter/
#     vit_base_p16_384_20220308-96dfe169.pth), or convert timm weights with mmseg's
#     tools/model_converters/vit2mmseg.py;
#   data/refer/refcoco/vocab.txt: python tools/build_word_vocab.py \
#     'data/refer/refcoco/refs(unc).p' --out data/refer/refcoco/vocab.txt
#   optional GloVe vectors: language_encoder.glove_file='data/glove/glove.840B.300d.txt'.
_base_ = ['_base_/datasets/refcoco.py', '_base_/default_runtime.py']

crop_size = (480, 480)
vocab_file = 'data/refer/refcoco/vocab.txt'
model = dict(
    type='ReSTR',
    # the base dataset config's: mean = std = 0.5 (x255), train and test inputs
    # padded to crop_size (ReSTR.predict crops the padding off again)
    data_preprocessor={{_base_.data_preprocessor}},
    backbone=dict(
        type='VisionTransformer',
        img_size=crop_size,
        patch_size=16,
        in_channels=3,
        embed_dims=768,
        num_layers=12,
        num_heads=12,
        mlp_ratio=4,
        out_indices=-1,
        qkv_bias=True,
        patch_bias=True,  # timm's patch embedding has a bias (mmseg's default: none)
        drop_rate=0.0,
        attn_drop_rate=0.0,
        drop_path_rate=0.1,
        with_cls_token=True,
        output_cls_token=False,
        final_norm=True,
        # official: nn.LayerNorm() everywhere (eps 1e-5), though the ViT weights were trained
        # with 1e-6 (timm's / JAX's); the published numbers come from fine-tuning with 1e-5
        norm_cfg=dict(type='LN', eps=1e-5, requires_grad=True),
        act_cfg=dict(type='GELU'),
        # the official 24x24 -> 30x30 position resize at load (timm 0.6.11: bicubic,
        # align_corners=False); inputs are padded to 480, so no resize happens in forward
        interpolate_mode='bicubic',
        init_cfg=dict(type='Pretrained',
                      checkpoint='pretrained/vit_base_p16_384_20220308-96dfe169.pth')),
    language_encoder=dict(
        type='ReSTRLanguageEncoder',
        vocab_file=vocab_file,
        embed_dims=300,
        out_dims=768,
        num_layers=6,
        num_heads=12,
        ffn_ratio=4,
        max_len=20,
        drop_path_rate=0.0,
        glove_file=None),
    fusion=dict(
        type='ReSTRFusionEncoder',
        visual_dims=768,
        language_dims=768,
        embed_dims=768,
        num_layers=2,
        num_heads=12,
        ffn_ratio=4,
        drop_path_rate=0.1),
    decoder=dict(type='ReSTRCoarseToFineDecoder', in_channels=1536, num_upsamples=4),
    loss=dict(type='ReSTRLoss', patch_size=16, patch_weight=0.1, patch_target_mode='sum',
              patch_threshold=0.8),
    train_cfg=dict(),
    test_cfg=dict(mode='whole'))

optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-5, betas=(0.9, 0.999), weight_decay=5e-4),
    paramwise_cfg=dict(custom_keys={'backbone': dict(lr_mult=0.1)}))
max_iters = 400000
warmup_iters = max_iters // 10
param_scheduler = [
    # official warmup: lr * iter / warmup from 0 (LinearLR cannot start at exactly 0)
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=warmup_iters),
    dict(type='PolyLR', eta_min=0.0, power=0.9, begin=warmup_iters, end=max_iters,
         by_epoch=False)
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=10000)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(by_epoch=False, interval=10000, max_keep_ckpts=2,
                    save_best='oIoU', rule='greater'),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='SegVisualizationHook'))
