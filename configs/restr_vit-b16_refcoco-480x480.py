# ReSTR (Kim et al., CVPR 2022) on RefCOCO (UNC), the official recipe (SouthFlame/restr
# train_restr.py, config.yml; docs/restr.md). Paper oIoU: val 67.22, testA 69.30, testB 64.45.
# - model (configs/_base_/models/restr_vit-b16.py): ViT-B/16 at 480x480 (timm 384 weights,
#   position grid 24x24 -> 30x30 once at load; timm 0.6.11's _load_weights, the version
#   official restr.yaml pins), 300-d word embeddings (GloVe in the official code, fine-tuned;
#   padding id 0) into 6 post-norm blocks, 2 + 2 fusion blocks (padded words masked; the
#   official code does not mask them), coarse-to-fine decoder, pixel BCE + 0.1 x patch BCE;
# - inputs: mean = std = 0.5, letterboxed and padded to 480 (_base_/datasets/refcoco.py);
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
#   data/refer/refcoco/vocab.txt: python tools/dataset_converters/build_word_vocab.py \
#     'data/refer/refcoco/refs(unc).p' --out data/refer/refcoco/vocab.txt
#   optional GloVe vectors: language_encoder.glove_file='data/glove/glove.840B.300d.txt'.
_base_ = [
    '_base_/models/restr_vit-b16.py', '_base_/datasets/refcoco.py', '_base_/default_runtime.py'
]

crop_size = (480, 480)
model = dict(
    # the base dataset config's: mean = std = 0.5 (x255), train and test inputs
    # padded to crop_size (ReSTR.predict crops the padding off again)
    data_preprocessor={{_base_.data_preprocessor}})

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
