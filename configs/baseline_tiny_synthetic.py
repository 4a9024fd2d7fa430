# One-stage CLIP baseline (ZegCLIP Sec. 3.2: dense patch embeddings x class text embeddings)
# with a tiny randomly initialised CLIP, trained from scratch on the synthetic shapes dataset.
# CPU demo config (tools/demo.py): a few minutes on 2 cores.
_base_ = [
    '_base_/datasets/synthetic.py', '_base_/default_runtime.py',
    '_base_/schedules/schedule_synthetic.py'
]

crop_size = (128, 128)  # as in the dataset base (base variables are not in scope here)

# Tiny CLIP in open_clip's config layout (mmseg_ovseg/clip/builder.py).
clip_model = dict(
    embed_dim=64,
    quick_gelu=False,
    vision_cfg=dict(image_size=128, layers=3, width=96, head_width=32, patch_size=8),
    text_cfg=dict(context_length=77, vocab_size=49408, width=64, heads=2, layers=2))

data_preprocessor = dict(
    type='SegDataPreProcessor',
    # CLIP's normalisation (RGB)
    mean=[122.771, 116.746, 104.094],
    std=[68.501, 66.632, 70.323],
    bgr_to_rgb=True,
    pad_val=0,
    seg_pad_val=255,
    size=crop_size)
model = dict(
    type='TextEncoderDecoder',
    data_preprocessor=data_preprocessor,
    vocabulary='synthetic',
    templates='single',
    backbone=dict(
        type='CLIPVisionTransformer',
        clip_model=clip_model,
        pretrained=None,
        frozen=False,  # random CLIP: the whole backbone trains
        out_indices=(2, ),
        output_dense=True),
    text_encoder=dict(
        type='OVCLIPTextEncoder', clip_model=clip_model, pretrained=None),
    decode_head=dict(
        type='PatchTextHead',
        in_channels=64,  # clip_model['embed_dim']: dense embeddings after ln_post + proj
        channels=64,  # text embedding dim
        proj_type='mlp',
        dropout_ratio=0.0,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    train_cfg=dict(),
    test_cfg=dict(mode='whole'))

max_iters = 200
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=100),
    dict(type='PolyLR', eta_min=1e-5, power=0.9, begin=100, end=max_iters, by_epoch=False)
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    checkpoint=dict(by_epoch=False, interval=max_iters, max_keep_ckpts=1))
# 2-core CPU: one loader worker leaves a core to the model.
randomness = dict(seed=0)
