# ZegCLIP transductive (self-training) on COCO-Stuff: 40k self-training iterations from the
# inductive model at 40k (official configs/coco/vpt_seg_zero_vit-b_512x512_40k_12_100_multi_st.py),
# no seen-class calibration. Paper (Tab. 1): pAcc 68.8, mIoU(S) 40.6, mIoU(U) 54.8, hIoU 46.6.
_base_ = ['./zegclip_vitb16_coco-stuff-zs.py']

load_from = 'work_dirs/zegclip_vitb16_coco-stuff-zs/iter_40000.pth'

model = dict(self_training=True, seen_calibration=0.0)

crop_size = (512, 512)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='RandomResize', scale=(2048, 512), ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='ZeroShotLabelMapping', split='coco_stuff171', mode='transductive'),
    dict(type='PackSegInputs')
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))

max_iters = 40000
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', eta_min=1e-6, power=0.9, begin=1500, end=max_iters, by_epoch=False)
]
train_cfg = dict(max_iters=max_iters, val_interval=max_iters // 5)
