# Ceiling: san_tiny_concepts.py trained fully supervised (all 55 classes and their names in
# training, no vocabulary switch), reported on the 'concepts' split like the zero-shot runs.
_base_ = ['./san_tiny_concepts.py']
crop_size = (128, 128)
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
