# ZegCLIP transductive (self-training) on the generated benchmark: unseen class names are known
# in training and pixels annotated with an unseen class get the model's own argmax over the
# unseen classes as label; started from the inductive model (zegclip_tiny_concepts-zs.py, run
# it first), no seen-class calibration at test -- as the official two-stage schedule, at tiny
# size (1600 inductive + 200 self-training iterations).
_base_ = ['./zegclip_tiny_concepts-zs.py']

load_from = 'work_dirs/zegclip_tiny_concepts-zs/iter_1600.pth'

model = dict(self_training=True, seen_calibration=0.0)

crop_size = (96, 96)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='RandomResize', scale=(128, 128), ratio_range=(0.75, 1.5), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size),
    dict(type='RandomFlip', prob=0.5),
    # seen labels keep their ids, unseen pixels are marked for pseudo-labelling
    dict(type='ZeroShotLabelMapping', split='concepts', mode='transductive'),
    dict(type='PackSegInputs')
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))

max_iters = 200
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=20),
    dict(type='PolyLR', eta_min=1e-5, power=0.9, begin=20, end=max_iters, by_epoch=False)
]
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
default_hooks = dict(checkpoint=dict(interval=max_iters))
