"""OVSegVisualizationHook: a Runner test labels its pictures with the model's vocabulary.

A tiny synthetic config whose model vocabulary (as cross-dataset configs set it,
``model.vocabulary=[...]``) is not the dataset's: mmseg's SegVisualizationHook draws with the
dataset's classes (the loop hands them to the visualizer), ours with the model's.
"""
import os.path as osp

import pytest
from mmengine.config import Config
from mmengine.runner import Runner
from mmseg.visualization import SegLocalVisualizer

from mmseg_ovseg.apis.palette import class_palette
from mmseg_ovseg.datasets.synthetic import SYNTHETIC_CLASSES, generate_synthetic_dataset

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIG = osp.join(REPO, 'configs', 'baseline_tiny_synthetic.py')
VOCAB = ['sky', 'lion', 'tiger', 'boat', 'tree', 'road', 'cup', 'kite']  # as many, other names

pytestmark = pytest.mark.slow  # every test here takes seconds


@pytest.fixture(scope='module')
def data_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('synthetic'))
    generate_synthetic_dataset(root, num_train=1, num_val=2, seed=0, size=32)
    return root


def _run_test(tmp_path, data_root, monkeypatch, hook_type, vocabulary=VOCAB):
    drawn = []  # (classes, palette, what) of every sem-seg map the visualizer drew
    real = SegLocalVisualizer._draw_sem_seg

    def spy(self, image, sem_seg, classes, palette, with_labels=True):
        drawn.append((list(classes), [list(c) for c in palette]))
        return real(self, image, sem_seg, classes, palette, with_labels)

    monkeypatch.setattr(SegLocalVisualizer, '_draw_sem_seg', spy)
    cfg = Config.fromfile(CONFIG)
    cfg.merge_from_dict({
        'work_dir': str(tmp_path / 'work'), 'model.vocabulary': vocabulary,
        'test_dataloader.dataset.data_root': data_root,
        'val_dataloader.dataset.data_root': data_root,
        'train_dataloader.dataset.data_root': data_root,
        'test_dataloader.batch_size': 1, 'test_dataloader.num_workers': 0,
        'default_hooks.visualization': dict(type=hook_type, draw=True, interval=1)})
    cfg.test_dataloader.pop('persistent_workers', None)
    # a fresh visualizer per run (mmengine keeps instances by name)
    cfg.visualizer.name = f'vis_{hook_type}_{len(vocabulary)}_{id(tmp_path)}'
    runner = Runner.from_cfg(cfg)
    runner.test()
    return runner, drawn


def test_runner_test_draws_with_the_model_vocabulary(tmp_path, data_root, monkeypatch):
    with pytest.warns(UserWarning, match='drawing predictions only'):
        runner, drawn = _run_test(tmp_path, data_root, monkeypatch, 'OVSegVisualizationHook')
    model = runner.model
    assert list(model.vocabulary) == VOCAB
    assert len(drawn) == 2  # one prediction per test image, no ground truth (other classes)
    for classes, palette in drawn:
        assert classes == VOCAB
        assert palette == [list(c) for c in model.dataset_meta['palette']]
        assert palette == [list(c) for c in class_palette(VOCAB)]  # keyed by name
    assert runner.visualizer.dataset_meta['classes'] == VOCAB
    vis = osp.join(runner.log_dir, 'vis_data', 'vis_image')
    assert osp.isdir(vis) and len([f for f in __import__('os').listdir(vis)]) == 2


def test_mmseg_hook_uses_the_dataset_classes(tmp_path, data_root, monkeypatch):
    """The control: mmseg's own hook labels with the dataset's names (the bug fixed here)."""
    runner, drawn = _run_test(tmp_path, data_root, monkeypatch, 'SegVisualizationHook')
    assert drawn and all(c == list(SYNTHETIC_CLASSES) for c, _ in drawn)
    assert list(runner.model.vocabulary) == VOCAB


def test_same_classes_draw_ground_truth_too(tmp_path, data_root, monkeypatch):
    runner, drawn = _run_test(tmp_path, data_root, monkeypatch, 'OVSegVisualizationHook',
                              vocabulary=list(SYNTHETIC_CLASSES))
    assert len(drawn) == 4  # ground truth and prediction of 2 images
    assert all(c == list(SYNTHETIC_CLASSES) for c, _ in drawn)
