"""Dataset converters (tools/dataset_converters/) and the layout check, on small inputs
fabricated here in the real archive formats (RGB-coded ADE *_seg.png, PASCAL-Context .mat via
scipy.io.savemat, PASCAL in Detail json, VOC folders).

Official facts used as expected values (MendelXu/SAN e19262d):
- san/data/datasets/register_ade20k_full.py: ADE full class index 2978 ("wall") -> train id
  0, 1831 ("person, individual, ...") -> 11, 1445 ("light bulb, ...") -> 478, 3124
  ("central processing unit, ...") -> 782; everything else -> 65535 (ignore_label=65535).
- datasets/prepare_pcontext_sem_seg_459cls.py: train id = LabelMap - 1 in uint16 (so 0 ->
  65535, ignore_label=65535 in register_pcontext.py).
"""
import json
import os
import os.path as osp

import numpy as np
import pytest
from PIL import Image

from tool_loader import REPO, load_tool

ade = load_tool('dataset_converters/ade20k_847')
pc459 = load_tool('dataset_converters/pascal_context_459')
from mmseg_ovseg.datasets.layout_check import check_dataset_layout  # noqa: E402

# (ADE full class index, train id) from SAN's register_ade20k_full.py
ADE_FACTS = [(2978, 0), (1831, 11), (1445, 478), (3124, 782)]
ADE_UNMAPPED = 5  # a class index that is not among the 847 (-> ignore)


def _ade_rgb(index_map: np.ndarray) -> np.ndarray:
    """Encode ADE class indices the way the full release's *_seg.png does: R/10*256 + G."""
    rgb = np.zeros(index_map.shape + (3, ), np.uint8)
    rgb[..., 0] = (index_map // 256) * 10
    rgb[..., 1] = index_map % 256
    rgb[..., 2] = 7  # instance channel, ignored
    return rgb


def _make_ade_full(root, split='validation', sizes=((40, 60), (700, 600)), seed=0):
    rng = np.random.default_rng(seed)
    classes = np.array([0, ADE_UNMAPPED] + [i for i, _ in ADE_FACTS])
    expected = {}
    for k, (h, w) in enumerate(sizes):
        folder = osp.join(root, 'images', 'ADE', split, 'cultural', f'scene_{k}')
        os.makedirs(folder, exist_ok=True)
        stem = f'ADE_{"val" if split == "validation" else "train"}_{k + 1:08d}'
        # blocks of 10x10 pixels, so nearest resizing keeps every class
        blocks = classes[rng.integers(0, len(classes), size=(h // 10 + 1, w // 10 + 1))]
        index_map = np.kron(blocks, np.ones((10, 10), np.int64))[:h, :w]
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(
            osp.join(folder, stem + '.jpg'))
        Image.fromarray(_ade_rgb(index_map)).save(osp.join(folder, stem + '_seg.png'))
        # the release also ships parts maps and json next to each image
        Image.fromarray(np.zeros((h, w, 3), np.uint8)).save(
            osp.join(folder, stem + '_parts_1.png'))
        with open(osp.join(folder, stem + '.json'), 'w') as f:
            json.dump({'annotation': {}}, f)
        expected[stem] = index_map
    return expected


def _train_ids(index_map):
    out = np.full(index_map.shape, 65535, np.int64)
    for ade_index, train_id in ADE_FACTS:
        out[index_map == ade_index] = train_id
    return out


def test_ade847_id_table_matches_san_and_our_vocabulary():
    with open(ade.IDS_FILE) as f:
        table = json.load(f)
    assert len(table['ids']) == 847 and len(set(table['ids'])) == 847
    for ade_index, train_id in ADE_FACTS:
        assert table['ids'][train_id] == ade_index
    # train id t must be the t-th name of the 'ade847' vocabulary the model is prompted with
    with open(osp.join(REPO, 'mmseg_ovseg', 'clip', 'vocabularies', 'ade847.txt')) as f:
        vocab = [line.rstrip('\n') for line in f if not line.startswith('#')]  # provenance
    assert vocab == table['names']


def test_ade847_convert(tmp_path):
    root = str(tmp_path / 'ADE20K_2021_17_01')
    expected = _make_ade_full(root)
    assert ade.main([root]) == 0
    for stem, index_map in expected.items():
        img = np.asarray(Image.open(osp.join(root, 'images_detectron2', 'validation',
                                             stem + '.jpg')))
        lab_img = Image.open(osp.join(root, 'annotations_detectron2', 'validation',
                                      stem + '.tif'))
        lab = np.asarray(lab_img)
        assert lab.dtype == np.uint16
        want = _train_ids(index_map)
        h, w = index_map.shape
        if min(h, w) > 512:  # shorter side shrunk to 512, labels by nearest neighbour
            assert min(lab.shape) == 512 and img.shape[:2] == lab.shape
            assert lab.shape == (round(h / w * 512), 512)
            assert set(np.unique(lab)) == set(np.unique(want))
            # each output pixel takes the source pixel floor(i * scale) (OpenCV's nearest)
            ys = np.minimum(np.floor(np.arange(lab.shape[0]) * h / lab.shape[0]), h - 1)
            xs = np.minimum(np.floor(np.arange(lab.shape[1]) * w / lab.shape[1]), w - 1)
            near = want[ys.astype(int)][:, xs.astype(int)]
            assert (near == lab).mean() > 0.99
        else:
            assert img.shape[:2] == (h, w)
            np.testing.assert_array_equal(lab.astype(np.int64), want)
        assert 478 in np.unique(lab) or 478 not in np.unique(want)  # > 255 kept


def test_ade847_labels_load_with_the_config_loader(tmp_path):
    """The TIFFs keep ids > 255 through LoadWideAnnotations (san_vitb16_ade-847.py's loader)."""
    from mmseg_ovseg.datasets.transforms import LoadWideAnnotations
    root = str(tmp_path / 'ADE20K_2021_17_01')
    expected = _make_ade_full(root, sizes=((30, 50), ))
    ade.convert(root)
    stem, index_map = next(iter(expected.items()))
    results = LoadWideAnnotations(ignore_value=65535, ignore_index=65535)(dict(
        seg_map_path=osp.join(root, 'annotations_detectron2', 'validation', stem + '.tif'),
        seg_fields=[], reduce_zero_label=False))
    np.testing.assert_array_equal(results['gt_seg_map'], _train_ids(index_map))


def test_ade847_wrong_or_partial_archive(tmp_path, capsys):
    # the SceneParsing release (ADE-150) instead of the full release
    scene = tmp_path / 'ADEChallengeData2016'
    os.makedirs(scene / 'images' / 'validation')
    os.makedirs(scene / 'annotations' / 'validation')
    assert ade.main([str(scene)]) == 1
    err = capsys.readouterr().err
    assert 'ADEChallengeData2016' in err and 'ADE20K_2021_17_01' in err
    # a missing folder: the expected path and what the parent holds
    assert ade.main([str(tmp_path / 'nothing_here')]) == 1
    err = capsys.readouterr().err
    assert 'nothing_here' in err and 'ADEChallengeData2016/' in err
    # half-extracted: an image without its _seg.png
    root = tmp_path / 'ADE20K_2021_17_01'
    _make_ade_full(str(root), sizes=((20, 20), (20, 30)))
    seg = root / 'images' / 'ADE' / 'validation' / 'cultural' / 'scene_1' / \
        'ADE_val_00000002_seg.png'
    os.remove(seg)
    assert ade.main([str(root)]) == 1
    err = capsys.readouterr().err
    assert '1 of the 2 images' in err and str(seg) in err
    # a grey (SceneParsing-style) label map where the RGB-coded one is expected
    Image.fromarray(np.zeros((20, 30), np.uint8)).save(seg)
    assert ade.main([str(root)]) == 1
    assert 'single-channel' in capsys.readouterr().err


def _make_pcontext(tmp_path, names_phases, seed=0, write_json=True):
    rng = np.random.default_rng(seed)
    voc = tmp_path / 'VOCdevkit' / 'VOC2010'
    os.makedirs(voc / 'JPEGImages')
    mat_dir = tmp_path / 'trainval'
    os.makedirs(mat_dir)
    from scipy.io import savemat
    maps = {}
    for name, _ in names_phases:
        h, w = rng.integers(20, 40, size=2)
        label = rng.integers(0, 460, size=(h, w)).astype(np.uint16)
        label[0, :3] = (0, 1, 459)  # unlabelled, first and last class
        savemat(str(mat_dir / f'{name}.mat'), {'LabelMap': label})
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(
            voc / 'JPEGImages' / f'{name}.jpg')
        maps[name] = label
    json_path = tmp_path / 'trainval_merged.json'
    if write_json:
        images = [dict(file_name=f'{n}.jpg', phase=p, image_id=int(n.replace('_', '')),
                       height=int(maps[n].shape[0]), width=int(maps[n].shape[1]))
                  for n, p in names_phases]
        with open(json_path, 'w') as f:
            json.dump(dict(info={}, images=images, annos_segmentation=[], categories=[]), f)
    return voc, mat_dir, json_path, maps


def test_pc459_convert_from_json(tmp_path):
    phases = [('2008_000002', 'train'), ('2008_000003', 'val'), ('2008_000007', 'val')]
    voc, mat_dir, json_path, maps = _make_pcontext(tmp_path, phases)
    assert pc459.main([str(voc), str(mat_dir), '--json', str(json_path)]) == 0
    with open(voc / 'ImageSets' / 'SegmentationContext' / 'val.txt') as f:
        assert f.read().split() == ['2008_000003', '2008_000007']
    out_dir = voc / 'annotations_detectron2' / 'pc459_val'
    assert sorted(os.listdir(out_dir)) == ['2008_000003.tif', '2008_000007.tif']
    for name in ('2008_000003', '2008_000007'):
        lab = np.asarray(Image.open(out_dir / f'{name}.tif'))
        assert lab.dtype == np.uint16
        # SAN: LabelMap - 1 in uint16 (0 wraps to 65535)
        np.testing.assert_array_equal(lab, (maps[name] - np.uint16(1)).astype(np.uint16))
        assert lab[0, 0] == 65535 and lab[0, 1] == 0 and lab[0, 2] == 458


def test_pc459_split_from_existing_list_and_config_layout(tmp_path):
    """With mmseg's SegmentationContext/val.txt present, no json is needed, and the result is
    complete for the layout san_vitb16_pc-459.py reads."""
    phases = [('2008_000003', 'val'), ('2008_000007', 'val'), ('2008_000009', 'train')]
    voc, mat_dir, _, maps = _make_pcontext(tmp_path, phases, write_json=False)
    os.makedirs(voc / 'ImageSets' / 'SegmentationContext')
    with open(voc / 'ImageSets' / 'SegmentationContext' / 'val.txt', 'w') as f:
        f.write('2008_000003\n2008_000007\n')
    dataset = dict(
        type='BaseSegDataset', data_root=str(voc),
        data_prefix=dict(img_path='JPEGImages', seg_map_path='annotations_detectron2/pc459_val'),
        ann_file='ImageSets/SegmentationContext/val.txt', img_suffix='.jpg',
        seg_map_suffix='.tif')
    before = check_dataset_layout(dataset)
    assert len(before) == 1 and 'annotations_detectron2/pc459_val' in before[0]
    assert pc459.convert(str(voc), str(mat_dir)) == {'val': 2}
    assert check_dataset_layout(dataset) == []
    # half-converted: a label map removed afterwards is named
    os.remove(voc / 'annotations_detectron2' / 'pc459_val' / '2008_000007.tif')
    after = check_dataset_layout(dataset)
    assert len(after) == 1 and '1 of the 2 label maps' in after[0]
    assert '2008_000007.tif' in after[0]


def test_pc459_wrong_archive(tmp_path, capsys):
    phases = [('2008_000003', 'val')]
    voc, mat_dir, json_path, _ = _make_pcontext(tmp_path, phases)
    from scipy.io import savemat
    # an SBD (VOC aug) .mat instead of a PASCAL-Context one
    savemat(str(mat_dir / '2008_000003.mat'), {'GTcls': np.zeros((1, ), dtype=object)})
    assert pc459.main([str(voc), str(mat_dir), '--json', str(json_path)]) == 1
    err = capsys.readouterr().err
    assert "no LabelMap; found ['GTcls']" in err and 'SBD' in err
    # a COCO instances json instead of trainval_merged.json
    os.remove(voc / 'ImageSets' / 'SegmentationContext' / 'val.txt')
    coco = tmp_path / 'instances.json'
    with open(coco, 'w') as f:
        json.dump(dict(images=[dict(id=1, file_name='a.jpg')], annotations=[]), f)
    assert pc459.main([str(voc), str(mat_dir), '--json', str(coco)]) == 1
    err = capsys.readouterr().err
    assert 'trainval_merged.json' in err and "['annotations', 'images']" in err
    # no split list and no json
    assert pc459.main([str(voc), str(mat_dir)]) == 1
    assert 'SegmentationContext/val.txt' in capsys.readouterr().err
    # the .mat folder missing
    assert pc459.main([str(voc), str(tmp_path / 'no_mats'), '--json', str(json_path)]) == 1
    assert 'no_mats' in capsys.readouterr().err


def test_layout_check_missing_and_partial(tmp_path):
    ade150 = dict(type='ADE20KDataset', data_root=str(tmp_path / 'ade' / 'ADEChallengeData2016'),
                  data_prefix=dict(img_path='images/validation',
                                   seg_map_path='annotations/validation'))
    problems = check_dataset_layout(ade150)
    assert len(problems) == 1 and 'ADEChallengeData2016 not found' in problems[0]
    root = tmp_path / 'ade' / 'ADEChallengeData2016'
    os.makedirs(root / 'images' / 'validation')
    os.makedirs(root / 'annotations' / 'validation')
    for i in range(3):
        Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(
            root / 'images' / 'validation' / f'ADE_val_{i:08d}.jpg')
    for i in range(2):
        Image.fromarray(np.zeros((4, 4), np.uint8)).save(
            root / 'annotations' / 'validation' / f'ADE_val_{i:08d}.png')
    problems = check_dataset_layout(ade150, expected_count=2000)
    assert len(problems) == 2
    assert '1 of the 3 images' in problems[0] and 'ADE_val_00000002.png' in problems[0]
    assert '3 images in' in problems[1] and '2000' in problems[1]


@pytest.mark.slow
def test_check_datasets_tool(tmp_path, capsys):
    """tools/misc/check_datasets.py on the PC-459 config: MISSING with the expected path
    before the conversion, ok after it (paths relocated with --data-root)."""
    check = load_tool('misc/check_datasets')
    cfg = osp.join(REPO, 'configs', 'san_vitb16_pc-459.py')
    data = tmp_path / 'data'
    os.makedirs(data)
    phases = [('2008_000003', 'val'), ('2008_000007', 'val')]
    voc, mat_dir, json_path, _ = _make_pcontext(data, phases)
    args = [cfg, '--split', 'val', '--data-root', str(data)]
    assert check.main(args) == 1
    out = capsys.readouterr().out
    assert 'MISSING' in out and 'ImageSets/SegmentationContext/val.txt not found' in out
    assert pc459.main([str(voc), str(mat_dir), '--json', str(json_path)]) == 0
    capsys.readouterr()
    assert check.main(args) == 0
    out = capsys.readouterr().out
    assert ': ok' in out and 'san_vitb16_pc-459:val' in out and '1 of 1 datasets ready' in out
