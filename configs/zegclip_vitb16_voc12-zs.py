# ZegCLIP (Zhou et al., CVPR 2023), inductive zero-shot on PASCAL VOC 2012 (20 classes, background
# ignored), ViT-B/16, deep prompts (10 tokens x 12 layers), relationship-descriptor decoder,
# focal(100) + dice(1). Unseen: pottedplant, sheep, sofa, train, tvmonitor (split 'voc20').
# Official recipe (ZiqinZhou66/ZegCLIP configs/voc12/vpt_seg_zero_vit-b_512x512_20k_12_10.py):
# 512 crops, AdamW 2e-5 x10 on prompts/head, poly 0.9 with 1500 warm-up iters, 20k iters at
# batch 16 (4 GPUs x 4) on VOC-aug. Paper (Tab. 1): pAcc 94.6, mIoU(S) 91.9, mIoU(U) 77.8,
# hIoU 84.3. The test resize is the official "shortest side 512" (mmseg 0.x min_size).
# Model: configs/_base_/models/zegclip_vit-b16.py; schedule: configs/_base_/schedules/
# schedule_zegclip_20k.py; data: mmseg's _base_/datasets/pascal_voc12_aug.py.
_base_ = [
    '_base_/models/zegclip_vit-b16.py', 'mmseg::_base_/datasets/pascal_voc12_aug.py',
    '_base_/default_runtime.py', '_base_/schedules/schedule_zegclip_20k.py'
]

vocabulary = 'voc20'
zero_shot_split = 'voc20'
model = dict(
    vocabulary=vocabulary,
    # 'a photo of a {}' without a final period: the official VOC text embeddings
    # (get_embedding.ipynb -> voc12_single.npy) and the official segmentor's default
    templates='zegclip_voc',
    zero_shot_split=zero_shot_split)

# ---------------------------------------------------------------- data: VOC 2012 + SBD aug
# mmseg's VOC-aug (train + SBD aug concatenated, val, mIoU) with ZegCLIP's pipelines; keeping
# only the 20 object classes maps background (0) to 255 through mmseg's label map.
metainfo = dict(classes=(
    'aeroplane', 'bicycle', 'bird', 'boat', 'bottle', 'bus', 'car', 'cat', 'chair', 'cow',
    'diningtable', 'dog', 'horse', 'motorbike', 'person', 'pottedplant', 'sheep', 'sofa', 'train',
    'tvmonitor'))
crop_size = (512, 512)
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
    # shortest side 512, no cap on the long side (official Resize(min_size=512))
    dict(type='ResizeShortestEdge', scale=512, max_size=1 << 20),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs')
]
dataset_train = dict(_base_.dataset_train, metainfo=metainfo, pipeline=train_pipeline)
dataset_aug = dict(_base_.dataset_aug, metainfo=metainfo, pipeline=train_pipeline)
train_dataloader = dict(
    batch_size=4,  # x 4 GPUs = 16
    dataset=dict(datasets=[dataset_train, dataset_aug]))
val_dataloader = dict(dataset=dict(metainfo=metainfo, pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='ZeroShotIoUMetric', split=zero_shot_split, iou_metrics=['mIoU'])
test_evaluator = val_evaluator

# ---------------------------------------------------------------- schedule
default_hooks = dict(
    # at half and full schedule: the -st configs start from the half-schedule checkpoint
    checkpoint=dict(by_epoch=False, interval=_base_.max_iters // 2,
                    save_best='hIoU', rule='greater'))

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
