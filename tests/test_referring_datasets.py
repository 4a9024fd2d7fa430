"""ReSTR's other referring datasets: RefCOCO+, RefCOCOg (umd, google), ReferIt.

Every file is fabricated here in the real formats: REFER ``refs(*).p`` (a protocol-2 pickle of
ref dicts) + COCO ``instances.json`` (polygons / RLE), and ReferIt's official layout
(``referit_query_<split>.json`` + ``images/<image>.jpg`` + ``mask/<image>_<region>.mat`` with
``segimg_t``, region = ``segimg_t == 0``, written with ``scipy.io.savemat``). Each new config
is loaded with ``data_root`` pointing at the fabricated files.
"""
import json
import os.path as osp
import pickle

import cv2
import numpy as np
import pytest
import scipy.io
import torch
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmseg.registry import DATASETS, MODELS

from mmseg_ovseg.datasets.referit import (
    LoadReferItMask,
    build_vocab_from_referit,
    load_referit_mask,
    load_referit_queries,
)
from mmseg_ovseg.models.language import WordVocabulary, split_words
from tool_loader import load_tool

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
LONG = ' '.join(f'word{i}' for i in range(25))  # longer than T = 20
COCO_CONFIGS = {
    # config -> (refs file, split of each ref, the config's evaluation splits)
    'refcoco+': ('refcoco+/refs(unc).p', ['train', 'val', 'testA', 'testB'],
                 ('val', 'testA', 'testB')),
    'refcocog-umd': ('refcocog/refs(umd).p', ['train', 'val', 'test', 'test'],
                     ('val', 'test')),
    'refcocog-google': ('refcocog/refs(google).p', ['train', 'val', 'val', 'train'],
                        ('val', )),
}
# (x0, y0, x1, y1) boxes (inclusive pixels) of the four objects; images are 30x40 (H x W)
BOXES = [(2, 3, 9, 12), (20, 5, 35, 25), (0, 0, 39, 4), (10, 15, 18, 29)]
IMG_HW = (30, 40)


def _cfg(name):
    return Config.fromfile(osp.join(ROOT, 'configs', f'restr_vit-b16_{name}-480x480.py'))


def _box_mask(box, hw=IMG_HW):
    m = np.zeros(hw, np.uint8)
    x0, y0, x1, y1 = box
    m[y0:y1 + 1, x0:x1 + 1] = 1
    return m


def _write_image(path, hw=IMG_HW, value=120):
    import os
    os.makedirs(osp.dirname(path), exist_ok=True)
    cv2.imwrite(path, np.full(hw + (3, ), value, np.uint8))


def _fake_refer(root, refs_file, splits):
    """A REFER dataset folder: 4 refs on 2 COCO images, 2 sentences each."""
    import os
    folder = osp.join(root, osp.dirname(refs_file))
    os.makedirs(folder, exist_ok=True)
    images, anns, refs = [], [], []
    for image_id in (9, 25):
        name = f'COCO_train2014_{image_id:012d}.jpg'
        images.append(dict(id=image_id, file_name=name, height=IMG_HW[0], width=IMG_HW[1]))
        _write_image(osp.join(root, 'images/mscoco/images/train2014', name))
    for i, (box, split) in enumerate(zip(BOXES, splits)):
        x0, y0, x1, y1 = box
        image_id = (9, 25)[i % 2]
        anns.append(dict(id=100 + i, image_id=image_id, category_id=1, iscrowd=0,
                         segmentation=[[x0, y0, x1, y0, x1, y1, x0, y1]]))
        sents = [f"The man's hat {i} on the left.", LONG if i == 0 else f'object {i}']
        refs.append(dict(ref_id=i, ann_id=100 + i, image_id=image_id, category_id=1,
                         split=split, sent_ids=[10 * i, 10 * i + 1],
                         file_name=f'COCO_train2014_{image_id:012d}_{100 + i}.jpg',
                         sentences=[dict(sent_id=10 * i + k, raw=s, sent=s.lower(),
                                         tokens=split_words(s)) for k, s in enumerate(sents)]))
    with open(osp.join(root, refs_file), 'wb') as f:
        pickle.dump(refs, f, protocol=2)  # as the original Python 2 files
    with open(osp.join(folder, 'instances.json'), 'w') as f:
        json.dump(dict(images=images, annotations=anns, categories=[dict(id=1, name='x')]), f)
    return refs


def _fake_referit(root, regions=None):
    """ReferIt in the official layout: query files, images, per-region .mat masks."""
    import os
    regions = regions or {
        'trainval': {'8756_1': ['the man on left', 'guy in red'], '8756_2': ['sky']},
        'test': {'77_3': ['tree right of the house', LONG], '1001_1': ['water .']},
    }
    os.makedirs(osp.join(root, 'mask'), exist_ok=True)
    boxes = {}
    for split, queries in regions.items():
        with open(osp.join(root, f'referit_query_{split}.json'), 'w') as f:
            json.dump(queries, f)
        for k, name in enumerate(queries):
            _write_image(osp.join(root, 'images', name.split('_')[0] + '.jpg'))
            box = BOXES[k + (2 if split == 'test' else 0)]
            # SAIAPR-style: 0 on the region, other (nonzero) values elsewhere
            seg = np.where(_box_mask(box) == 1, 0, 1 + np.arange(IMG_HW[1]) % 3)
            scipy.io.savemat(osp.join(root, 'mask', name + '.mat'),
                             dict(segimg_t=seg.astype(np.int16)))
            boxes[name] = box
    return boxes


def _dataset(cfg, loader, root, split=None):
    ds = cfg[loader].dataset.copy()
    ds['data_root'] = str(root)
    if split is not None:
        ds['split'] = split
    return DATASETS.build(ds)


# ------------------------------------------------------------------------ configs / facts
@pytest.mark.parametrize('name', list(COCO_CONFIGS) + ['referit'])
def test_configs_official_facts(name):
    cfg = _cfg(name)
    assert cfg.model.language_encoder.max_len == 20  # official build_batches.py: T = 20
    ds = cfg.test_dataloader.dataset
    assert cfg.val_dataloader.dataset == ds
    if name == 'referit':
        assert ds.type == 'ReferItDataset' and ds.ann_file == 'referit_query_test.json'
        assert cfg.train_dataloader.dataset.ann_file == 'referit_query_trainval.json'
        assert cfg.model.language_encoder.vocab_file == 'data/referit/vocab.txt'
        assert [t['type'] for t in ds.pipeline] == [
            'LoadImageFromFile', 'Resize', 'LoadReferItMask', 'PackReferringInputs']
    else:
        refs_file, _, splits = COCO_CONFIGS[name]
        assert ds.type == 'RefCOCODataset' and ds.split == 'val'
        assert cfg.splits['test'] == splits
        for loader in ('train_dataloader', 'val_dataloader'):
            assert cfg[loader].dataset.ann_file == refs_file
            assert cfg[loader].dataset.instances_file == osp.dirname(refs_file) + \
                '/instances.json'
        assert cfg.model.language_encoder.vocab_file.startswith(
            'data/refer/' + osp.dirname(refs_file) + '/vocab')
    # the recipe is RefCOCO's: same model, optimiser, schedule, letterbox
    ref = _cfg('refcoco')
    for key in ('backbone', 'fusion', 'decoder', 'loss', 'data_preprocessor'):
        assert cfg.model[key] == ref.model[key]
    assert cfg.optim_wrapper == ref.optim_wrapper and cfg.max_iters == 400000
    assert cfg.train_dataloader.batch_size == 8
    assert 'CheckpointHook' != cfg.default_hooks.checkpoint.get('type')


# ----------------------------------------------------------------- RefCOCO+ / RefCOCOg
@pytest.mark.parametrize('name', list(COCO_CONFIGS))
@pytest.mark.slow
def test_coco_based_configs_load_samples(name, tmp_path):
    refs_file, ref_splits, eval_splits = COCO_CONFIGS[name]
    refs = _fake_refer(str(tmp_path), refs_file, ref_splits)
    cfg = _cfg(name)
    train = _dataset(cfg, 'train_dataloader', tmp_path)
    assert len(train) == 2 * ref_splits.count('train')
    for split in eval_splits:
        ds = _dataset(cfg, 'test_dataloader', tmp_path, split)
        want = [r for r in refs
                if r['split'] == split or (split == 'test' and r['split'].startswith('test'))]
        got = [(ds.get_data_info(i)['ref_id'], ds.get_data_info(i)['sent_id'])
               for i in range(len(ds))]
        assert got and got == [(r['ref_id'], s['sent_id'])
                               for r in want for s in r['sentences']]
        out = ds[0]
        ref = want[0]
        meta = out['data_samples'].metainfo
        assert meta['sentence'] == ref['sentences'][0]['sent']
        assert meta['ori_shape'] == IMG_HW and out['inputs'].shape == (3, 360, 480)
        gt = out['data_samples'].gt_sem_seg.data[0].numpy()  # at the original size
        assert (gt == _box_mask(BOXES[ref['ref_id']])).all()
    # the expression as the model sees it: vocabulary from the refs, T = 20
    vocab = load_tool('dataset_converters/build_word_vocab')
    out_file = str(tmp_path / 'vocab.txt')
    assert vocab.main([str(tmp_path / refs_file), '--out', out_file]) == 0
    v = WordVocabulary.from_file(out_file)
    assert {'man', "'", 's', 'hat', 'word24'} <= set(v.words)
    ids, valid = v.encode([LONG, "the man's hat 3 on the left."],
                          max_len=cfg.model.language_encoder.max_len)
    assert ids.shape == (2, 20) and valid[0].all()  # truncated to T = 20
    assert [v.id_to_word(i) for i in ids[0].tolist()] == [f'word{i}' for i in range(20)]
    assert [v.id_to_word(i) for i in ids[1, :valid[1].sum()].tolist()] == \
        ['the', 'man', "'", 's', 'hat', '3', 'on', 'the', 'left']


@pytest.mark.parametrize('name', list(COCO_CONFIGS))
def test_coco_based_configs_bad_files(name, tmp_path):
    refs_file, ref_splits, _ = COCO_CONFIGS[name]
    cfg = _cfg(name)
    with pytest.raises(FileNotFoundError, match=r'refs pickle .*' + name.split('-')[0]):
        _dataset(cfg, 'val_dataloader', tmp_path)
    _fake_refer(str(tmp_path), refs_file, ref_splits)
    inst = tmp_path / osp.dirname(refs_file) / 'instances.json'
    inst.write_text('{"images": [')
    with pytest.raises(ValueError, match='not valid JSON') as e:
        _dataset(cfg, 'val_dataloader', tmp_path)
    assert str(inst) in str(e.value)
    inst.unlink()
    with pytest.raises(FileNotFoundError, match='instances file') as e:
        _dataset(cfg, 'val_dataloader', tmp_path)
    assert str(inst) in str(e.value)


# ------------------------------------------------------------------------------- ReferIt
@pytest.mark.slow
def test_referit_config_loads_samples(tmp_path):
    boxes = _fake_referit(str(tmp_path))
    cfg = _cfg('referit')
    test = _dataset(cfg, 'test_dataloader', tmp_path)
    infos = [test.get_data_info(i) for i in range(len(test))]
    assert [(d['ref_id'], d['sentence']) for d in infos] == [
        ('77_3', 'tree right of the house'), ('77_3', LONG), ('1001_1', 'water .')]
    assert infos[0]['img_path'] == str(tmp_path / 'images' / '77.jpg')
    assert infos[0]['mask_path'] == str(tmp_path / 'mask' / '77_3.mat')
    for i in range(len(test)):
        out = test[i]
        meta = out['data_samples'].metainfo
        assert meta['sentence'] == infos[i]['sentence'] and meta['ori_shape'] == IMG_HW
        gt = out['data_samples'].gt_sem_seg.data[0].numpy()
        assert (gt == _box_mask(boxes[infos[i]['ref_id']])).all()
    train = _dataset(cfg, 'train_dataloader', tmp_path)
    assert len(train) == 3
    out = train[0]  # letterboxed: 30x40 -> 360x480, target padded with 255
    assert out['inputs'].shape == (3, 480, 480)
    gt = out['data_samples'].gt_sem_seg.data[0]
    assert (gt[360:] == 255).all() and set(gt[:360].unique().tolist()) == {0, 1}
    x0, y0, x1, y1 = boxes['8756_1']
    assert gt[y0 * 12 + 6, x0 * 12 + 6] == 1 and gt[(y1 + 2) * 12, (x1 + 2) * 12] == 0

    # vocabulary from the query files (the tool), then the model's tokens
    tool = load_tool('dataset_converters/build_word_vocab')
    out_file = str(tmp_path / 'vocab.txt')
    files = [str(tmp_path / f'referit_query_{s}.json') for s in ('trainval', 'test')]
    assert tool.main(files + ['--out', out_file]) == 0
    v = WordVocabulary.from_file(out_file)
    assert v.words == build_vocab_from_referit(files).words
    assert v.words[0] == 'the'  # 'the' occurs twice, every other word once
    assert set(v.words) == {w for s in ['the man on left', 'guy in red', 'sky',
                                        'tree right of the house', LONG, 'water .']
                            for w in split_words(s)}
    assert '.' not in v.words  # a final '.' is dropped, as the official preprocessing
    ids, valid = v.encode(['water .'], max_len=cfg.model.language_encoder.max_len)
    assert v.id_to_word(ids[0, 0].item()) == 'water' and valid.sum() == 1


def test_referit_bad_files(tmp_path, capsys):
    cfg = _cfg('referit')
    with pytest.raises(FileNotFoundError, match='referit_query_test.json not found'):
        _dataset(cfg, 'test_dataloader', tmp_path)
    q = tmp_path / 'referit_query_test.json'
    for text, match in [('{"77_3": ["a"', 'not valid JSON'),
                        ('[["77_3", "a"]]', 'expected a JSON object'),
                        ('{"773": ["a"]}', "region name '773'"),
                        ('{"77_3": []}', "region '77_3' has no list"),
                        ('{"77_3": ["a", 5]}', 'non-string expression'),
                        ('{}', 'no regions')]:
        q.write_text(text)
        with pytest.raises(ValueError, match=match) as e:
            _dataset(cfg, 'test_dataloader', tmp_path)
        assert str(q) in str(e.value)
    # masks: missing, not a .mat, without segimg_t, not 2-D, wrong size
    m = tmp_path / 'm.mat'
    with pytest.raises(FileNotFoundError, match=str(m)):
        load_referit_mask(str(m))
    m.write_bytes(b'not a mat file at all')
    with pytest.raises(ValueError, match='not a readable MATLAB'):
        load_referit_mask(str(m))
    scipy.io.savemat(str(m), dict(mask=np.zeros((3, 4))))
    with pytest.raises(ValueError, match=r"no 'segimg_t' array \(it holds \['mask'\]\)"):
        load_referit_mask(str(m))
    scipy.io.savemat(str(m), dict(segimg_t=np.zeros((3, 4, 2))))
    with pytest.raises(ValueError, match=r'shape \(3, 4, 2\)'):
        load_referit_mask(str(m))
    scipy.io.savemat(str(m), dict(segimg_t=np.array([[0, 1, 1], [2, 0, -1]])))
    assert load_referit_mask(str(m)).tolist() == [[1, 0, 0], [0, 1, 0]]
    with pytest.raises(ValueError, match=r'is \(2, 3\) but image x.jpg is \(30, 40\)'):
        LoadReferItMask()(dict(mask_path=str(m), sentence='a', img_path='x.jpg',
                               ori_shape=IMG_HW))
    with pytest.raises(KeyError, match='mask_path'):
        LoadReferItMask()(dict(sentence='a'))
    # a missing mask surfaces with its path when the sample is loaded
    _fake_referit(str(tmp_path))
    (tmp_path / 'mask' / '77_3.mat').unlink()
    ds = _dataset(cfg, 'test_dataloader', tmp_path)
    with pytest.raises(FileNotFoundError, match='77_3.mat'):
        ds.pipeline(ds.get_data_info(0))
    # the vocabulary tool on ReferIt files: kinds not mixed, refs-only options refused
    tool = load_tool('dataset_converters/build_word_vocab')
    assert tool.main([str(q), 'refs(unc).p', '--out', str(tmp_path / 'v.txt')]) == 1
    assert 'not both' in capsys.readouterr().err
    assert tool.main([str(q), '--splits', 'train', '--out', str(tmp_path / 'v.txt')]) == 1
    assert 'do not apply' in capsys.readouterr().err
    assert load_referit_queries(str(q))['77_3'][0] == 'tree right of the house'


# ------------------------------------------------------------------------------- models
@pytest.mark.parametrize('name', list(COCO_CONFIGS) + ['referit'])
@pytest.mark.slow
def test_config_builds_model_and_predicts_a_sample(name, tmp_path):
    """Each config's model (tiny widths, the config's T, vocabulary and data preprocessor)
    predicts one fabricated sample of its own dataset at the original image size."""
    cfg = _cfg(name)
    root = tmp_path / 'data'
    if name == 'referit':
        _fake_referit(str(root))
        srcs = [str(root / 'referit_query_trainval.json')]
    else:
        refs_file, ref_splits, _ = COCO_CONFIGS[name]
        _fake_refer(str(root), refs_file, ref_splits)
        srcs = [str(root / refs_file)]
    vocab = str(tmp_path / 'vocab.txt')
    assert load_tool('dataset_converters/build_word_vocab').main(srcs + ['--out', vocab]) == 0
    m = cfg.model
    m.backbone.update(embed_dims=32, num_layers=1, num_heads=2, init_cfg=None)
    m.language_encoder.update(vocab_file=vocab, embed_dims=16, out_dims=32, num_layers=1,
                              num_heads=2)
    m.fusion.update(visual_dims=32, language_dims=32, embed_dims=32, num_layers=1,
                    num_heads=2)
    m.decoder.update(in_channels=64)
    torch.manual_seed(0)
    model = MODELS.build(m).eval()
    assert model.language_encoder.max_len == 20
    assert len(model.language_encoder.vocab) == len(WordVocabulary.from_file(vocab))
    ds = _dataset(cfg, 'test_dataloader', root)
    with torch.no_grad():
        pred = model.test_step(pseudo_collate([ds[0]]))[0]
    assert pred.pred_sem_seg.data.shape == (1, ) + IMG_HW
    assert pred.metainfo['sentence'] == ds.get_data_info(0)['sentence']
