# SegViT ViT-L/16 on ADE20K-150 at 512x512 crops: the official 640 recipe
# (segvit_vit-l16_ade20k-640x640.py: AdamW lr 2e-5, wd 0.01, head lr x10, no norm decay,
# no layer decay, 1500 warmup on poly 1.0, grad clip 35, 160k iters, 2 images/GPU x 4 GPUs =
# batch 8) with the crop and slide window of the official 512 base model
# (configs/_base_/models/seg_vit-b16.py: slide 512 / stride 341). The README's ADE numbers
# (54.6 / 55.2) are for 640 crops; this variant has no published result.
_base_ = ['./segvit_vit-l16_ade20k-640x640.py']

crop_size = (512, 512)
data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(img_size=crop_size),
    test_cfg=dict(mode='slide', crop_size=crop_size, stride=(341, 341)))
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='RandomResize', scale=(2048, 512), ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(2048, 512), keep_ratio=True),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs')
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
