# DenseCLIP (Rao et al., CVPR 2022), ViT variant, closed set on the generated concept benchmark
# (configs/_base_/datasets/concepts.py: all 55 classes labelled in training, no vocabulary
# switch, no ZeroShotLabelMapping) with the pretrained in-package tiny CLIP ('ovseg-tiny-clip',
# docs/tiny_clip.md) for both towers, as configs/denseclip_fpn_vit-b16_ade20k-640x640.py does
# with OpenAI's ViT-B/16:
# - image tower fine-tuned at lr x0.1 (official), its 4 blocks as (B, 64, 16, 16) maps: the
#   128 px images at patch 8 (the tiny CLIP's 8x8 pretraining grid is resized bilinearly to
#   16x16 once at construction, as the official backbone); FPNAdapter with the official
#   patch-8 layout (2, 1, 0.5, 0.25) -> strides 4, 8, 16, 32;
# - pixel-text score map (55 channels, 16x16) concatenated to level 2 (FPN in_channels
#   [64, 64, 64 + 55, 64]), context decoder (post-model prompting) on the 64-d embeddings,
#   text tower frozen with 8 learnable contexts, auxiliary CE (weight 0.4) on score_map / tau;
# - mmseg FPN + FPNHead at tiny widths (32 channels).
# Evaluated with ZeroShotIoUMetric on the 'concepts' split only to report mIoU over all 55
# classes next to the mIoU of the 46 / 9 class groups; nothing is unseen in training.
# Plain-FPN variant (no text, score map, context decoder or aux loss):
# denseclip-vit_tiny_concepts-fpn.py; random-init controls: *-randclip.py.
# Results and commands: docs/open_vocab.md ("DenseCLIP").
_base_ = [
    '_base_/datasets/concepts.py', '_base_/default_runtime.py',
    '_base_/schedules/schedule_synthetic.py'
]

crop_size = (128, 128)
num_classes = 55  # 'concepts' vocabulary
width = 64  # tiny CLIP ViT width: every block map has 64 channels
clip_model = 'ovseg-tiny-clip'
clip_pretrained = 'work_dirs/tiny_clip/ovseg-tiny-clip.pt'

data_preprocessor = dict(
    type='SegDataPreProcessor',
    # the tiny CLIP was pretrained with CLIP's normalisation
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
    vocabulary='concepts',
    backbone=dict(
        type='CLIPVisionTransformer',
        clip_model=clip_model,
        pretrained=clip_pretrained,
        out_indices=(0, 1, 2, 3),
        output_dense=True,  # + dense (B, 64, 16, 16) and global (B, 64) embeddings
        frozen=False,
        drop_path_rate=0.1,
        interpolate_mode='bilinear',  # official position-embedding resize
        pos_grid=(16, 16)),
    adapter=dict(type='FPNAdapter', in_channels=width, rescales=(2, 1, 0.5, 0.25),
                 norm_cfg=dict(type='BN', requires_grad=True)),
    text_encoder=dict(
        type='ContextCLIPTextEncoder',
        clip_model=clip_model,
        pretrained=clip_pretrained,
        num_contexts=8,
        context_length=13,  # [SOT, 8 contexts, <= 3 name tokens, EOT]
        name_suffix='',
        init_std=1.0),
    context_decoder=dict(
        type='ContextDecoder', visual_dim=64, embed_dims=32, num_heads=2, num_layers=2,
        dropout=0.1, gamma_init=1e-4),
    score_concat_index=2,
    tau=0.07,
    neck=dict(
        type='FPN', in_channels=[width, width, width + num_classes, width], out_channels=32,
        num_outs=4),
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

max_iters = 300
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-3, betas=(0.9, 0.999), weight_decay=1e-4),
    paramwise_cfg=dict(custom_keys={
        'backbone': dict(lr_mult=0.1),
        'text_encoder': dict(lr_mult=0.0),
        'text_encoder.contexts': dict(lr_mult=1.0),
        'norm': dict(decay_mult=0.0)
    }),
    clip_grad=dict(max_norm=1.0))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=30),
    dict(type='PolyLR', eta_min=1e-5, power=0.9, begin=30, end=max_iters, by_epoch=False)
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    checkpoint=dict(by_epoch=False, interval=max_iters, max_keep_ckpts=1))
# closed set: every class labelled (the dataset base's pipeline maps unseen pixels to 255)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='RandomResize', scale=(128, 128), ratio_range=(0.75, 1.5), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs')
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
custom_hooks = []
randomness = dict(seed=0)
