"""A few iterations of the tiny baseline config through mmengine's Runner on a tiny
generated dataset: the config, dataset, segmentor, head, metric and checkpointing work
together (seconds on CPU)."""
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.runner import Runner

from mmseg_ovseg.datasets.synthetic import generate_synthetic_dataset

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIG = osp.join(REPO, 'configs', 'baseline_tiny_synthetic.py')

pytestmark = pytest.mark.slow  # every test here takes seconds


def _tiny_config(data_root, work_dir, max_iters=3):
    cfg = Config.fromfile(CONFIG)
    clip = cfg.clip_model
    clip.vision_cfg.update(image_size=64, layers=2, width=64, patch_size=16)
    clip.text_cfg.update(width=32, layers=1)
    clip.embed_dim = 32
    cfg.model.backbone.clip_model = clip
    cfg.model.backbone.out_indices = (1, )
    cfg.model.text_encoder.clip_model = clip
    cfg.model.decode_head.update(in_channels=32, channels=32)
    cfg.model.data_preprocessor.size = (64, 64)
    train_pipeline = [
        dict(type='LoadImageFromFile'), dict(type='LoadAnnotations'),
        dict(type='RandomCrop', crop_size=(64, 64)), dict(type='RandomFlip', prob=0.5),
        dict(type='PackSegInputs')
    ]
    for loader, split, pipeline in ((cfg.train_dataloader, 'train', train_pipeline),
                                    (cfg.val_dataloader, 'val', None)):
        loader.update(num_workers=0, persistent_workers=False)
        loader.dataset.data_root = data_root
        if pipeline is not None:
            loader.dataset.pipeline = pipeline
    cfg.train_dataloader.batch_size = 2
    cfg.test_dataloader = cfg.val_dataloader
    cfg.train_cfg.update(max_iters=max_iters, val_interval=max_iters)
    cfg.param_scheduler = [dict(type='PolyLR', power=0.9, begin=0, end=max_iters,
                                by_epoch=False)]
    cfg.default_hooks.checkpoint.update(interval=max_iters)
    cfg.default_hooks.logger.interval = 1
    cfg.work_dir = work_dir
    return cfg


def test_short_train_and_val(tmp_path):
    data_root = str(tmp_path / 'data')
    generate_synthetic_dataset(data_root, num_train=4, num_val=2, seed=0, size=64)
    cfg = _tiny_config(data_root, str(tmp_path / 'work'))
    runner = Runner.from_cfg(cfg)
    before = {k: v.clone() for k, v in runner.model.state_dict().items()}
    runner.train()
    ckpt = tmp_path / 'work' / 'iter_3.pth'
    assert ckpt.is_file()
    after = runner.model.state_dict()
    # backbone and head trained, text encoder frozen
    assert not torch.equal(before['backbone.visual.conv1.weight'],
                           after['backbone.visual.conv1.weight'])
    assert not torch.equal(before['decode_head.logit_scale'], after['decode_head.logit_scale'])
    text_keys = [k for k in after if k.startswith('text_encoder.')]
    assert text_keys and all(torch.equal(before[k], after[k]) for k in text_keys)

    metrics = runner.val()
    assert set(metrics) >= {'mIoU', 'aAcc', 'mAcc'}
    assert 0 <= metrics['mIoU'] <= 100

    # the checkpoint loads back (torch weights-only loading) and gives the same metrics
    cfg2 = _tiny_config(data_root, str(tmp_path / 'work2'))
    cfg2.load_from = str(ckpt)
    runner2 = Runner.from_cfg(cfg2)
    metrics2 = runner2.test()
    assert abs(metrics2['mIoU'] - metrics['mIoU']) < 1e-6
