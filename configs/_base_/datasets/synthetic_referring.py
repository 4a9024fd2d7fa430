# The tiny procedural referring dataset (mmseg_ovseg/datasets/synthetic_referring.py), in the
# REFER layout: 64x64 images with 2-3 coloured shapes, expressions such as "the red circle".
# Generate it with:
#   .venv/bin/python -c "from mmseg_ovseg.datasets import generate_referring_dataset as g; \
#     g('data/synthetic_referring', splits=dict(train=200, val=50, testA=25, testB=25))"
# RefCOCO's recipe (refcoco.py: letterbox, mean = std = 0.5, no flip, batch 8, train/val
# splits) at 64x64, with in-process loading and the metric's default thresholds.
_base_ = ['./refcoco.py']

data_root = 'data/synthetic_referring'
ann_file = 'refsyn/refs(unc).p'
instances_file = 'refsyn/instances.json'
img_prefix = dict(img_path='images')
crop_size = (64, 64)

data_preprocessor = dict(size=crop_size, test_cfg=dict(size=crop_size))

# refcoco.py's pipelines, at crop_size (lists are replaced, not merged)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadReferringAnnotation'),
    dict(type='Resize', scale=crop_size, keep_ratio=True),
    dict(type='Pad', size=crop_size, pad_val=dict(img=0, seg=255)),
    dict(type='PackReferringInputs')  # no flip: "left"/"right" are in the expressions
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=crop_size, keep_ratio=True),
    dict(type='LoadReferringAnnotation'),
    dict(type='PackReferringInputs')
]
train_dataloader = dict(
    num_workers=0,
    persistent_workers=False,
    dataset=dict(data_root=data_root, ann_file=ann_file, instances_file=instances_file,
                 data_prefix=img_prefix, pipeline=train_pipeline))
val_dataloader = dict(
    num_workers=0,
    persistent_workers=False,
    dataset=dict(data_root=data_root, ann_file=ann_file, instances_file=instances_file,
                 data_prefix=img_prefix, pipeline=test_pipeline))
test_dataloader = val_dataloader

val_evaluator = dict(_delete_=True, type='ReferringIoUMetric')
test_evaluator = val_evaluator
