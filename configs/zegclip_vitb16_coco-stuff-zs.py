# ZegCLIP inductive zero-shot on COCO-Stuff 164k (171 classes), ViT-B/16, 100 prompt tokens per
# layer, 15-template text ensemble. Unseen (split 'coco_stuff171', official configs/coco/
# vpt_seg_zero_vit-b_512x512_80k_12_100_multi.py novel_class): cow, giraffe, suitcase, frisbee,
# skateboard, carrot, scissors, cardboard, clouds, grass, playingfield, river, road, tree,
# wall-concrete. 80k iterations at batch 16. Paper (Tab. 1): pAcc 62.0, mIoU(S) 40.2,
# mIoU(U) 41.4, hIoU 40.8. Data: mmseg's COCO-Stuff 164k layout (tools/dataset_converters/
# coco_stuff164k.py -> *_labelTrainIds.png).
# Model: configs/_base_/models/zegclip_vit-b16.py with 100 prompt tokens; data: mmseg's
# _base_/datasets/coco-stuff164k.py with ZegCLIP's pipelines; schedule: the VOC one
# (_base_/schedules/schedule_zegclip_20k.py) stretched to 80k iterations.
_base_ = [
    '_base_/models/zegclip_vit-b16.py', 'mmseg::_base_/datasets/coco-stuff164k.py',
    '_base_/default_runtime.py', '_base_/schedules/schedule_zegclip_20k.py'
]

vocabulary = 'coco_stuff171'
zero_shot_split = 'coco_stuff171'
num_prompt_tokens = 100
crop_size = (512, 512)

model = dict(
    vocabulary=vocabulary,
    zero_shot_split=zero_shot_split,
    templates='zegclip',
    backbone=dict(num_prompt_tokens=num_prompt_tokens))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='RandomResize', scale=(2048, 512), ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='ZeroShotLabelMapping', split=zero_shot_split, mode='inductive'),
    dict(type='PackSegInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeShortestEdge', scale=512, max_size=1 << 20),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs')
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))  # 4 per GPU x 4 GPUs = 16
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='ZeroShotIoUMetric', split=zero_shot_split, iou_metrics=['mIoU'])
test_evaluator = val_evaluator

max_iters = 80000
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', eta_min=1e-6, power=0.9, begin=1500, end=max_iters, by_epoch=False)
]
train_cfg = dict(max_iters=max_iters, val_interval=max_iters // 10)
# at half and full schedule: the -st config starts from the half-schedule checkpoint
default_hooks = dict(
    checkpoint=dict(by_epoch=False, interval=max_iters // 2, save_best='hIoU', rule='greater'))

# Test-time augmentation (tools/test.py --tta; mmseg's SegTTAModel averages the softmax of the
# scores): the test resize at 0.75 / 1 / 1.25 of its short side x horizontal flip, with the
# test pipeline's image and annotation loaders.
tta_pipeline = [
    test_pipeline[0],
    dict(
        type='TestTimeAug',
        transforms=[
            [dict(test_pipeline[1], scale=int(512 * r)) for r in (0.75, 1.0, 1.25)],
            [dict(type='RandomFlip', prob=p, direction='horizontal') for p in (0.0, 1.0)],
            [test_pipeline[2]],
            [test_pipeline[3]],
        ])
]
