# ZegCLIP transductive (self-training) on VOC: unseen class names are known in training and the
# pixels annotated with an unseen class get pseudo-labels = the model's own argmax over the unseen
# classes. Official: 10k inductive iterations, then 10k self-training iterations starting from
# that checkpoint (configs/voc12/vpt_seg_zero_vit-b_512x512_10k_12_10_st.py), no seen-class
# calibration at test. Paper (Tab. 1): pAcc 95.1, mIoU(S) 91.8, mIoU(U) 82.2, hIoU 86.7.
_base_ = ['./zegclip_vitb16_voc12-zs.py']

# The inductive model after half of its schedule (saved by zegclip_vitb16_voc12-zs.py).
load_from = 'work_dirs/zegclip_vitb16_voc12-zs/iter_10000.pth'

model = dict(self_training=True, seen_calibration=0.0)

crop_size = (512, 512)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='RandomResize', scale=(2048, 512), ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    # seen labels keep their ids, unseen pixels are marked for pseudo-labelling
    dict(type='ZeroShotLabelMapping', split='voc20', mode='transductive'),
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

max_iters = 10000
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', eta_min=1e-6, power=0.9, begin=1500, end=max_iters, by_epoch=False)
]
train_cfg = dict(max_iters=max_iters, val_interval=max_iters // 5)
