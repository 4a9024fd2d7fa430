"""tools/test_ov.py end to end on fabricated tiny datasets in the layouts of the five
cross-dataset benchmarks (ADE-847 and PC-459 with 16-bit TIFF labels), with the tiny SAN of
configs/san_tiny_synthetic.py (random weights, saved as a checkpoint).

The expected numbers are computed here independently: the same checkpoint segments each image
through ``OpenVocabInferencer`` with the benchmark's vocabulary, and the mIoU against the
ground truth held in memory (the label encodings of each benchmark undone by hand) is computed
with numpy. Ground truth is the inferencer's prediction with a perturbed block and ignored
pixels, so a wrong vocabulary, a label offset (reduce_zero_label), a lost background/ignore
mapping or 16-bit labels cut to 8 bits all change the number.
"""
import json
import os
import os.path as osp
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch
from mmengine.config import Config
from PIL import Image

from mmseg_ovseg.apis import OpenVocabInferencer
from tool_loader import REPO, load_tool

test_ov = load_tool('test_ov')
CFG = osp.join(REPO, 'configs', 'san_tiny_synthetic.py')
SIZES = ((48, 64), (40, 40))
NAMES = ('2008_000003', '2008_000007')  # VOC-style names, used for every benchmark
VOCABS = dict(ade847=847, pc459=459, ade150=150, pc59=59, voc=20)

pytestmark = pytest.mark.slow  # every test here takes seconds


@pytest.fixture(scope='module')
def tiny_ckpt(tmp_path_factory):
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS
    init_default_scope('mmseg')
    # seed 1: this random tiny SAN predicts classes above 255 for ADE-847 and PC-459 (asserted
    # below); it predicts one class per image, the ground truth adds others around it
    torch.manual_seed(1)
    model = MODELS.build(Config.fromfile(CFG).model)
    path = str(tmp_path_factory.mktemp('ckpt') / 'san_tiny.pth')
    torch.save(dict(state_dict=model.state_dict(), meta=dict()), path)
    return path


def _layout(root, key):
    """(image folder, label folder, label suffix, split file or None) of a benchmark, as the
    SAN cross-dataset configs read them."""
    if key == 'ade150':
        base = osp.join(root, 'ade', 'ADEChallengeData2016')
        return (osp.join(base, 'images', 'validation'),
                osp.join(base, 'annotations', 'validation'), '.png', None)
    if key == 'ade847':
        base = osp.join(root, 'ADE20K_2021_17_01')
        return (osp.join(base, 'images_detectron2', 'validation'),
                osp.join(base, 'annotations_detectron2', 'validation'), '.tif', None)
    voc = osp.join(root, 'VOCdevkit', 'VOC2012' if key == 'voc' else 'VOC2010')
    seg = dict(pc59='SegmentationClassContext', pc459='annotations_detectron2/pc459_val',
               voc='SegmentationClass')[key]
    split = osp.join(voc, 'ImageSets', 'Segmentation' if key == 'voc' else
                     'SegmentationContext', 'val.txt')
    return (osp.join(voc, 'JPEGImages'), osp.join(voc, seg),
            '.tif' if key == 'pc459' else '.png', split)


def _write_images(root, key, seed):
    img_dir, _, _, split = _layout(root, key)
    os.makedirs(img_dir, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for name, (h, w) in zip(NAMES, SIZES):
        # smooth random colours so that the prediction has regions
        small = rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)
        img = np.asarray(Image.fromarray(small).resize((w, h), Image.BILINEAR))
        path = osp.join(img_dir, name + '.jpg')
        Image.fromarray(img).save(path, quality=95)
        paths.append(path)
    if split:
        os.makedirs(osp.dirname(split), exist_ok=True)
        with open(split, 'w') as f:
            f.writelines(n + '\n' for n in NAMES)
    return paths


def _ground_truth(pred, k, rng):
    """Evaluated ground truth (class ids, -1 = ignored) derived from a prediction."""
    gt = pred.astype(np.int64).copy()
    h, w = gt.shape
    gt[:h // 3, :w // 3] = (gt[:h // 3, :w // 3] + 7) % k  # a wrong block
    gt[-4:, :] = -1  # ignored rows
    # a few pixels of the highest classes, > 255 for the wide benchmarks
    gt[h // 2, w // 2:w // 2 + 3] = [k - 1, k - 2, k - 3]
    return gt


def _write_label(path, gt, key):
    """Encode evaluated ids the way each benchmark's files do."""
    if key in ('ade847', 'pc459'):  # 16-bit TIFF, 65535 = ignore
        Image.fromarray(np.where(gt < 0, 65535, gt).astype(np.uint16)).save(path)
    elif key in ('ade150', 'pc59'):  # 0 = other/background (ignored by reduce_zero_label)
        Image.fromarray(np.where(gt < 0, 0, gt + 1).astype(np.uint8)).save(path)
    else:  # VOC: 0 background (not among the 20 classes -> ignored), 255 void
        enc = gt + 1
        enc[gt < 0] = 0
        enc[-1, :] = 255
        Image.fromarray(enc.astype(np.uint8)).save(path)


def _miou(preds, gts, k):
    inter = np.zeros(k)
    union = np.zeros(k)
    for p, g in zip(preds, gts):
        valid = g >= 0
        p, g = p[valid], g[valid]
        inter += np.bincount(p[p == g], minlength=k)[:k]
        union += (np.bincount(p, minlength=k)[:k] + np.bincount(g, minlength=k)[:k])
    union -= inter
    with np.errstate(invalid='ignore', divide='ignore'):
        iou = inter / union
    return float(np.nanmean(iou) * 100)


def _text_cache(root):
    """Text-embedding cache shared by the reference inferencer and test_ov.py (keyed by the
    tower weights, vocabulary and templates): each vocabulary is encoded once."""
    return osp.join(osp.dirname(root), 'text_cache')


def _fabricate(root, ckpt, keys):
    """Write the benchmarks' files; return the expected mIoU of each."""
    inferencer = OpenVocabInferencer(
        CFG, ckpt, classes='synthetic',
        cfg_options={'model.text_encoder.cache_dir': _text_cache(root)})
    expected = {}
    for seed, key in enumerate(keys):
        k = VOCABS[key]
        paths = _write_images(root, key, seed)
        inferencer.set_vocabulary(key if key != 'voc' else 'voc20')
        assert len(inferencer.classes) == k
        rng = np.random.default_rng(100 + seed)
        _, seg_dir, suffix, _ = _layout(root, key)
        os.makedirs(seg_dir, exist_ok=True)
        preds, gts = [], []
        for path, sample in zip(paths, inferencer(paths)):
            pred = sample.pred_sem_seg.data[0].numpy().astype(np.int64)
            gt = _ground_truth(pred, k, rng)
            if key == 'voc':
                gt[-1, :] = -1  # written as 255 (void)
            _write_label(osp.join(seg_dir, osp.basename(path)[:-4] + suffix), gt, key)
            preds.append(pred)
            gts.append(gt)
        expected[key] = (_miou(preds, gts, k), preds)
    return expected


def test_test_ov_five_benchmarks(tmp_path, tiny_ckpt, capsys):
    root = str(tmp_path / 'data')
    expected = _fabricate(root, tiny_ckpt, list(VOCABS))
    # the wide benchmarks really predict ids above 255 (else the 16-bit check is void)
    for key in ('ade847', 'pc459'):
        assert max(int(p.max()) for p in expected[key][1]) > 255, key
    work = str(tmp_path / 'work')
    results = test_ov.main([CFG, tiny_ckpt, '--data-root', root, '--work-dir', work,
                            '--cfg-options', f'model.text_encoder.cache_dir={_text_cache(root)}'])
    out = capsys.readouterr().out
    for key, (miou, _) in expected.items():
        assert results[key]['vocabulary'] == (key if key != 'voc' else 'voc20')
        assert results[key]['num_classes'] == VOCABS[key]
        assert results[key]['mIoU'] == pytest.approx(miou, abs=0.011), key
    with open(osp.join(work, 'ov_results.json')) as f:
        summary = json.load(f)
    assert summary['columns'] == ['A-847', 'PC-459', 'A-150', 'PC-59', 'VOC']
    assert summary['results']['PC-459']['mIoU'] == results['pc459']['mIoU']
    with open(osp.join(work, 'ov_results.md')) as f:
        md = f.read()
    assert md in out  # printed as written
    row = md.strip().splitlines()[-1]
    cells = [c.strip() for c in row.strip('|').split('|')]
    assert cells[0] == 'san_tiny_synthetic'
    assert cells[1:] == [f'{results[k]["mIoU"]:.2f}' for k in
                         ('ade847', 'pc459', 'ade150', 'pc59', 'voc')]


def test_test_ov_missing_and_partial_datasets(tmp_path, tiny_ckpt, capsys):
    """Nothing present but a half-extracted ADE-150: a line per benchmark naming the path it
    expected, '-' in every column, no model run."""
    root = str(tmp_path / 'data')
    img_dir, seg_dir, _, _ = _layout(root, 'ade150')
    _write_images(root, 'ade150', 0)
    os.makedirs(seg_dir)
    Image.fromarray(np.zeros(SIZES[0], np.uint8)).save(osp.join(seg_dir, NAMES[0] + '.png'))
    work = str(tmp_path / 'work')
    results = test_ov.main([CFG, tiny_ckpt, '--data-root', root, '--work-dir', work])
    out = capsys.readouterr().out
    assert all(r['mIoU'] is None for r in results.values())
    lines = {line.split(':')[0]: line for line in out.splitlines() if ': missing - ' in line}
    assert set(lines) == {'A-847', 'PC-459', 'A-150', 'PC-59', 'VOC'}
    assert osp.join(root, 'ADE20K_2021_17_01') in lines['A-847']
    assert osp.join(root, 'VOCdevkit', 'VOC2010') in lines['PC-59']
    assert osp.join(root, 'VOCdevkit', 'VOC2012') in lines['VOC']
    assert '1 of the 2 images' in lines['A-150']
    assert osp.join(seg_dir, NAMES[1] + '.png') in lines['A-150']
    assert '| san_tiny_synthetic | - | - | - | - | - |' in out
    with open(osp.join(work, 'ov_results.json')) as f:
        assert 'not found' in json.load(f)['results']['VOC']['missing']


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def test_dist_test_ov_two_processes(tmp_path, tiny_ckpt):
    """tools/dist_test_ov.sh: torchrun, 2 gloo processes, one benchmark; rank 0 alone writes
    the table, and the number equals the independent computation."""
    root = str(tmp_path / 'data')
    expected = _fabricate(root, tiny_ckpt, ['pc459'])
    work = str(tmp_path / 'work')
    env = dict(os.environ, PYTHON=sys.executable, PORT=str(_free_port()), OMP_NUM_THREADS='1')
    proc = subprocess.run(
        ['bash', osp.join(REPO, 'tools', 'dist_test_ov.sh'), CFG, tiny_ckpt, '2',
         '--data-root', root, '--work-dir', work, '--benchmarks', 'pc459',
         '--cfg-options', 'env_cfg.dist_cfg.backend=gloo',
         f'model.text_encoder.cache_dir={_text_cache(root)}'],
        capture_output=True, text=True, env=env, timeout=240, cwd=str(tmp_path))
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert proc.stdout.count('| model |') == 1  # the table from rank 0 only
    with open(osp.join(work, 'ov_results.json')) as f:
        res = json.load(f)['results']
    assert res['PC-459']['mIoU'] == pytest.approx(expected['pc459'][0], abs=0.011)
    assert res['PC-459']['images'] == 2


def test_zegclip_cross_dataset_switch(tmp_path):
    """ZegCLIP (the COCO-Stuff zero-shot config): the target vocabulary replaces COCO's, the
    seen/unseen split is dropped (official configs/cross_dataset/coco-to-*.py: novel_class =
    []), the config's own test resolution (shortest side 512) and 512x512 sliding window stay,
    the benchmark's 16-bit loader and IoUMetric(ignore_index=65535) come in; then a tiny
    ZegCLIP runs the PC-459 benchmark end to end."""
    base = Config.fromfile(osp.join(REPO, 'configs', 'zegclip_vitb16_coco-stuff-zs.py'))
    assert base.model.zero_shot_split == 'coco_stuff171'
    spec = test_ov.benchmark_spec('pc459', osp.join(REPO, 'configs'), str(tmp_path))
    cfg, info = test_ov.benchmark_cfg(base, spec, 'ckpt.pth', str(tmp_path / 'w'))
    assert cfg.model.vocabulary == 'pc459' and info['num_classes'] == 459
    assert cfg.model.zero_shot_split is None and cfg.model.self_training is False
    assert cfg.model.test_cfg.mode == 'slide' and tuple(cfg.model.test_cfg.crop_size) == (
        512, 512)
    steps = [s['type'] for s in cfg.test_dataloader.dataset.pipeline]
    assert steps == ['LoadImageFromFile', 'ResizeShortestEdge', 'LoadWideAnnotations',
                     'PackSegInputs']
    assert cfg.test_dataloader.dataset.pipeline[1]['scale'] == 512
    assert cfg.test_evaluator == dict(type='IoUMetric', iou_metrics=['mIoU'],
                                      ignore_index=65535)
    assert cfg.test_dataloader.dataset.data_root == osp.join(str(tmp_path), 'VOCdevkit',
                                                              'VOC2010')

    # a tiny ZegCLIP checkpoint through the whole tool
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS
    tiny = osp.join(REPO, 'configs', 'zegclip_tiny_synthetic-zs.py')
    init_default_scope('mmseg')
    model = MODELS.build(Config.fromfile(tiny).model)
    ckpt = str(tmp_path / 'zegclip_tiny.pth')
    torch.save(dict(state_dict=model.state_dict(), meta=dict()), ckpt)
    root = str(tmp_path / 'data')
    expected = _fabricate_with(root, ckpt, 'pc459', tiny)
    results = test_ov.main([tiny, ckpt, '--data-root', root, '--work-dir',
                            str(tmp_path / 'work'), '--benchmarks', 'pc459', '--cfg-options',
                            f'model.text_encoder.cache_dir={_text_cache(root)}'])
    assert results['pc459']['mIoU'] == pytest.approx(expected, abs=0.011)


def _fabricate_with(root, ckpt, key, config):
    """Like _fabricate for one benchmark, with the reference prediction of ``config``'s model
    under the same switch (vocabulary, no zero-shot split)."""
    inferencer = OpenVocabInferencer(
        config, ckpt, cfg_options={'model.text_encoder.cache_dir': _text_cache(root),
                                   'model.zero_shot_split': None})
    inferencer.set_vocabulary(key)
    k = VOCABS[key]
    paths = _write_images(root, key, 0)
    _, seg_dir, suffix, _ = _layout(root, key)
    os.makedirs(seg_dir, exist_ok=True)
    rng = np.random.default_rng(0)
    preds, gts = [], []
    for path, sample in zip(paths, inferencer(paths)):
        pred = sample.pred_sem_seg.data[0].numpy().astype(np.int64)
        gt = _ground_truth(pred, k, rng)
        _write_label(osp.join(seg_dir, osp.basename(path)[:-4] + suffix), gt, key)
        preds.append(pred)
        gts.append(gt)
    return _miou(preds, gts, k)
