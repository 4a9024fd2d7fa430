"""Test-time augmentation: `tools/test.py --tta` on a tiny CLIP config (SAN), and every config
whose dataset allows it has a `tta_pipeline`."""
import glob
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmseg.models import SegTTAModel
from mmseg.registry import MODELS

from mmseg_ovseg.datasets.synthetic import generate_synthetic_dataset
from tool_loader import REPO, load_tool

CONFIG = osp.join(REPO, 'configs', 'san_tiny_synthetic.py')
# Referring segmentation: a horizontal flip swaps "left" and "right" in the expressions, so
# mmseg's flip TTA would average the prediction for a different object.
NO_TTA_DATASETS = {'RefCOCODataset', 'ReferItDataset'}


@pytest.mark.slow
def test_tta_runs_scales_and_flips(tmp_path, monkeypatch):
    root = str(tmp_path / 'synthetic')
    generate_synthetic_dataset(root, num_train=1, num_val=2, seed=0, size=64)
    cfg = Config.fromfile(CONFIG)
    model = MODELS.build(cfg.model)  # random weights, saved as a checkpoint
    ckpt = str(tmp_path / 'random.pth')
    torch.save(dict(state_dict=model.state_dict(), meta=dict()), ckpt)

    views = []
    merge = SegTTAModel.merge_preds

    def spy(self, data_samples_list):
        for samples in data_samples_list:
            views.append(sorted((tuple(s.img_shape), bool(s.flip)) for s in samples))
        return merge(self, data_samples_list)

    monkeypatch.setattr(SegTTAModel, 'merge_preds', spy)
    opts = [f'test_dataloader.dataset.data_root={root}', 'test_dataloader.num_workers=0']
    metrics = load_tool('test').main(
        [CONFIG, ckpt, '--tta', '--work-dir', str(tmp_path / 'work'), '--cfg-options'] + opts)
    assert 'mIoU' in metrics
    # 2 images, each seen at 0.75 / 1 / 1.25 of 64 px, unflipped and flipped
    expected = sorted((s, f) for s in [(48, 48), (64, 64), (80, 80)] for f in (False, True))
    assert views == [expected, expected]


def _configs():
    return sorted(glob.glob(osp.join(REPO, 'configs', '*.py')))


@pytest.mark.parametrize('path', _configs(), ids=osp.basename)
@pytest.mark.slow
def test_every_config_has_a_tta_pipeline(path):
    cfg = Config.fromfile(path)
    dataset = cfg.test_dataloader.dataset
    if dataset.get('type') in NO_TTA_DATASETS:
        assert 'tta_pipeline' not in cfg, f'{path}: flip TTA on a referring dataset'
        return
    assert cfg.get('tta_model') is not None, f'{path}: no tta_model'
    assert cfg.get('tta_pipeline'), f'{path}: no tta_pipeline (tools/test.py --tta fails)'
    tta = cfg.tta_pipeline
    assert tta[-1]['type'] == 'TestTimeAug'
    transforms = tta[-1]['transforms']
    flips = [t.get('prob') for t in transforms[1]]
    assert transforms[1][0]['type'] == 'RandomFlip' and sorted(flips) == [0.0, 1.0]
    # annotations are loaded as in the test pipeline (same loader and options), after the
    # resize: metrics compare at the original size
    test_loaders = [t for t in dataset.pipeline if 'Annotation' in t['type']]
    tta_loaders = [t for group in transforms for t in group if 'Annotation' in t['type']]
    assert [t['type'] for t in tta_loaders] == [t['type'] for t in test_loaders], path
    # options a TTA loader sets are the test loader's (mmseg's own ADE20K tta_pipeline leaves
    # reduce_zero_label to the dataset)
    for tta_loader, test_loader in zip(tta_loaders, test_loaders):
        assert {k: test_loader.get(k) for k in tta_loader} == dict(tta_loader), path
    # the image loader is the test pipeline's
    assert tta[0]['type'] == dataset.pipeline[0]['type'], path
