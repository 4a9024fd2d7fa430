# ZegCLIP fully supervised on VOC (all 20 classes seen in training, no calibration): the upper
# bound of the zero-shot table. Evaluated with the same seen/unseen split so that mIoU(S),
# mIoU(U) and hIoU are comparable. Official configs/voc12/vpt_seg_fully_vit-b_512x512_20k_12_10.py;
# paper (Tab. 1): pAcc 96.3, mIoU(S) 92.4, mIoU(U) 90.9, hIoU 91.6.
_base_ = ['./zegclip_vitb16_voc12-zs.py']

model = dict(zero_shot_split=None, seen_calibration=0.0)

crop_size = (512, 512)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='RandomResize', scale=(2048, 512), ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs')
]
train_dataloader = dict(
    dataset=dict(datasets=[
        dict(
            type='PascalVOCDataset',
            data_root='data/VOCdevkit/VOC2012',
            metainfo={{_base_.metainfo}},
            data_prefix=dict(img_path='JPEGImages', seg_map_path=seg_dir),
            ann_file=f'ImageSets/Segmentation/{split}.txt',
            pipeline=train_pipeline)
        for seg_dir, split in (('SegmentationClass', 'train'), ('SegmentationClassAug', 'aug'))
    ]))
