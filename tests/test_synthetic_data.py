import hashlib
import json
import os
import os.path as osp

import numpy as np
import pytest
from PIL import Image

from mmseg_ovseg.clip.vocabularies import SYNTHETIC_CLASSES
from mmseg_ovseg.datasets.synthetic import (
    SyntheticShapesDataset,
    generate_synthetic_dataset,
    render_sample,
)


def _digest(root):
    """sha1 of every file under root, keyed by relative path."""
    out = {}
    for dirpath, _, files in os.walk(root):
        for name in files:
            path = osp.join(dirpath, name)
            with open(path, 'rb') as f:
                out[osp.relpath(path, root)] = hashlib.sha1(f.read()).hexdigest()
    return out


def test_layout_and_label_values(tmp_path):
    root = tmp_path / 'syn'
    info = generate_synthetic_dataset(str(root), num_train=6, num_val=3, seed=1, size=64)
    assert info['generated']
    for split, n in (('train', 6), ('val', 3)):
        imgs = sorted(os.listdir(root / 'img_dir' / split))
        anns = sorted(os.listdir(root / 'ann_dir' / split))
        assert imgs == anns == [f'{i:06d}.png' for i in range(n)]
        for name in imgs:
            img = Image.open(root / 'img_dir' / split / name)
            ann = Image.open(root / 'ann_dir' / split / name)
            assert img.mode == 'RGB' and img.size == (64, 64)
            assert ann.mode == 'L' and ann.size == (64, 64)
            labels = np.unique(np.asarray(ann))
            assert labels.max() < len(SYNTHETIC_CLASSES)  # no 255 anywhere
            assert len(labels) >= 2  # background plus at least one object
    meta = json.loads((root / 'meta.json').read_text())
    assert meta['params']['num_train'] == 6 and meta['classes'] == list(SYNTHETIC_CLASSES)
    # no temporary directories left next to the dataset
    assert os.listdir(tmp_path) == ['syn']


def test_deterministic_and_seed_dependent(tmp_path):
    generate_synthetic_dataset(str(tmp_path / 'a'), num_train=4, num_val=2, seed=3, size=64)
    generate_synthetic_dataset(str(tmp_path / 'b'), num_train=4, num_val=2, seed=3, size=64)
    generate_synthetic_dataset(str(tmp_path / 'c'), num_train=4, num_val=2, seed=4, size=64)
    a, b, c = (_digest(tmp_path / n) for n in 'abc')
    assert a == b
    img_keys = [k for k in a if k.startswith('img_dir')]
    assert all(a[k] != c[k] for k in img_keys)
    # image i does not depend on how many images are generated
    img, label = render_sample(3, 'train', 2, 64)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / 'a/img_dir/train/000002.png')),
                                  img)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / 'a/ann_dir/train/000002.png')),
                                  label)


def test_class_coverage_and_colour_identifies_class():
    counts = np.zeros(len(SYNTHETIC_CLASSES), np.int64)
    mean_colour = {}
    for i in range(40):
        img, label = render_sample(0, 'train', i, 128)
        counts += np.bincount(label.ravel(), minlength=len(counts))
        for c in np.unique(label):
            mean_colour.setdefault(int(c), []).append(img[label == c].mean(0))
    assert (counts > 0).all(), counts
    assert counts[0] / counts.sum() < 0.95  # objects are not negligible
    # classes differ in colour: the mean colours of any two classes are far apart
    means = np.stack([np.mean(mean_colour[c], 0) for c in range(len(SYNTHETIC_CLASSES))])
    dists = np.linalg.norm(means[:, None] - means[None], axis=-1)
    assert dists[~np.eye(len(means), dtype=bool)].min() > 30, dists.round()


def test_skip_if_exists_and_regenerate(tmp_path):
    root = str(tmp_path / 'syn')
    assert generate_synthetic_dataset(root, num_train=3, num_val=2, size=64)['generated']
    before = _digest(root)
    stamp = os.stat(osp.join(root, 'meta.json')).st_mtime_ns
    assert not generate_synthetic_dataset(root, num_train=3, num_val=2, size=64)['generated']
    assert os.stat(osp.join(root, 'meta.json')).st_mtime_ns == stamp
    # other parameters replace the dataset
    assert generate_synthetic_dataset(root, num_train=2, num_val=2, size=64)['generated']
    assert len(os.listdir(osp.join(root, 'img_dir', 'train'))) == 2
    after = _digest(root)
    assert all(after[k] == before[k] for k in after if k.startswith(('img_dir', 'ann_dir')))
    # a damaged dataset (missing file) is regenerated, identically
    os.remove(osp.join(root, 'ann_dir', 'val', '000001.png'))
    assert generate_synthetic_dataset(root, num_train=2, num_val=2, size=64)['generated']
    assert _digest(root) == after


def test_refuses_foreign_directory_and_bad_args(tmp_path):
    (tmp_path / 'mine').mkdir()
    (tmp_path / 'mine' / 'notes.txt').write_text('precious')
    with pytest.raises(FileExistsError, match='refusing'):
        generate_synthetic_dataset(str(tmp_path / 'mine'), num_train=1, num_val=1, size=64)
    assert (tmp_path / 'mine' / 'notes.txt').read_text() == 'precious'
    with pytest.raises(ValueError, match='num_train'):
        generate_synthetic_dataset(str(tmp_path / 'x'), num_train=0, num_val=1)


def test_dataset_through_mmseg_registry_and_pipeline(tmp_path):
    from mmengine.registry import init_default_scope
    from mmseg.registry import DATASETS
    init_default_scope('mmseg')
    root = str(tmp_path / 'syn')
    generate_synthetic_dataset(root, num_train=3, num_val=2, size=64)
    ds = DATASETS.build(dict(
        type='SyntheticShapesDataset', data_root=root,
        data_prefix=dict(img_path='img_dir/val', seg_map_path='ann_dir/val'),
        pipeline=[dict(type='LoadImageFromFile'), dict(type='LoadAnnotations'),
                  dict(type='RandomCrop', crop_size=(48, 48)), dict(type='PackSegInputs')]))
    assert isinstance(ds, SyntheticShapesDataset) and len(ds) == 2
    assert ds.metainfo['classes'] == tuple(SYNTHETIC_CLASSES)
    assert len(ds.metainfo['palette']) == len(SYNTHETIC_CLASSES)
    assert ds.reduce_zero_label is False
    item = ds[1]
    assert tuple(item['inputs'].shape) == (3, 48, 48)
    gt = item['data_samples'].gt_sem_seg.data
    assert tuple(gt.shape) == (1, 48, 48)
    # labels survive loading unchanged (no zero-label reduction, no ignore)
    _, label = render_sample(0, 'val', 1, 64)
    full = ds.get_data_info(1)
    assert full['seg_map_path'].endswith('000001.png')
    assert set(np.unique(gt.numpy())) <= set(np.unique(label))
