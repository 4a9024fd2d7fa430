# One-stage CLIP baseline (ZegCLIP Sec. 3.2: dense patch embeddings x class text embeddings)
# on the generated zero-shot benchmark with the pretrained tiny CLIP, frozen; only a 1x1-conv
# MLP on the patch embeddings trains. Inductive: ZeroShotVocabularyHook trains with the 46
# seen names (unseen pixels ignored), evaluation is on all 55 classes.
_base_ = [
    '_base_/datasets/concepts.py', '_base_/default_runtime.py',
    '_base_/schedules/schedule_synthetic.py'
]

crop_size = (128, 128)
zero_shot_split = 'concepts'
clip_model = 'ovseg-tiny-clip'
clip_pretrained = 'work_dirs/tiny_clip/ovseg-tiny-clip.pt'

data_preprocessor = dict(
    type='SegDataPreProcessor',
    mean=[122.771, 116.746, 104.094],
    std=[68.501, 66.632, 70.323],
    bgr_to_rgb=True,
    pad_val=0,
    seg_pad_val=255,
    size=crop_size)
model = dict(
    type='TextEncoderDecoder',
    data_preprocessor=data_preprocessor,
    vocabulary='concepts',
    templates='single',
    backbone=dict(
        type='CLIPVisionTransformer',
        clip_model=clip_model,
        pretrained=clip_pretrained,
        frozen=True,
        out_indices=(3, ),
        output_dense=True),
    text_encoder=dict(
        type='OVCLIPTextEncoder', clip_model=clip_model, pretrained=clip_pretrained),
    decode_head=dict(
        type='PatchTextHead',
        in_channels=64,  # CLIP embedding width
        channels=64,
        proj_type='mlp',
        dropout_ratio=0.0,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    train_cfg=dict(),
    test_cfg=dict(mode='whole'))

max_iters = 300
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=30),
    dict(type='PolyLR', eta_min=1e-5, power=0.9, begin=30, end=max_iters, by_epoch=False)
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    checkpoint=dict(by_epoch=False, interval=max_iters, max_keep_ckpts=1))
custom_hooks = [dict(type='ZeroShotVocabularyHook', split=zero_shot_split)]
randomness = dict(seed=0)
