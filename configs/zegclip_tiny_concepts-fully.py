# Ceiling: zegclip_tiny_concepts-zs.py trained fully supervised (all 55 classes labelled, no
# split in the model, no calibration); still reported as mIoU(S) / mIoU(U) / hIoU on the
# 'concepts' split, so its mIoU(U) is what the unseen classes reach when labelled.
_base_ = ['./zegclip_tiny_concepts-zs.py']
model = dict(zero_shot_split=None)
crop_size = (96, 96)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='RandomResize', scale=(128, 128), ratio_range=(0.75, 1.5), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs')
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
