"""ReSTR groundwork: REFER-layout loader, COCO masks, referring transforms, ReferringIoUMetric."""
import json
import os
import os.path as osp
import pickle
import shutil

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.structures import PixelData
from mmseg.registry import DATASETS, METRICS, TRANSFORMS
from mmseg.structures import SegDataSample

from mmseg_ovseg.datasets.coco_mask import (
    decode_rle_string,
    encode_rle_string,
    mask_to_rle,
    polygons_to_mask,
    rle_to_mask,
    segmentation_to_mask,
)
from mmseg_ovseg.datasets.refcoco import RefCOCODataset, ref_in_split
from mmseg_ovseg.datasets.synthetic_referring import (
    COLORS,
    INSTANCES_FILE,
    REFS_FILE,
    generate_referring_dataset,
)
from mmseg_ovseg.utils.safe_pickle import UnsafePickleError, load_plain_pickle

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
SPLITS = dict(train=3, val=2, testA=1, testB=1)


@pytest.fixture(scope='module')
def syn(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('refsyn'))
    return generate_referring_dataset(root, splits=SPLITS, seed=3, size=64)


def _dataset(root, split='val', pipeline=(), **kwargs):
    return RefCOCODataset(data_root=root, ann_file=REFS_FILE, instances_file=INSTANCES_FILE,
                          data_prefix=dict(img_path='images'), split=split,
                          pipeline=list(pipeline), **kwargs)


# ----------------------------------------------------------------------------- COCO masks
def test_compressed_rle_hand_examples():
    # 3x3, centre pixel: column-major runs [4, 1, 4] -> '4', '1', '4'.
    assert decode_rle_string('414') == [4, 1, 4]
    # runs [4, 1, 2, 1, 1]; from the 4th run on the value is stored minus the run two
    # before: 1 - 1 = 0 -> '0', 1 - 2 = -1 -> 31 + 48 = 'O'.
    assert decode_rle_string('4120O') == [4, 1, 2, 1, 1]
    assert encode_rle_string([4, 1, 2, 1, 1]) == '4120O'
    expected = np.zeros((3, 3), np.uint8)
    expected[1, 1] = expected[1, 2] = 1  # flat positions 4 and 7 in column-major order
    np.testing.assert_array_equal(rle_to_mask(dict(size=[3, 3], counts='4120O'), 3, 3),
                                  expected)
    np.testing.assert_array_equal(rle_to_mask(dict(size=[3, 3], counts=[4, 1, 2, 1, 1]), 3, 3),
                                  expected)
    # a large run needs several characters (continuation bit)
    assert decode_rle_string(encode_rle_string([1000, 3, 2000, 7])) == [1000, 3, 2000, 7]


def test_rle_round_trip_and_errors():
    rng = np.random.default_rng(0)
    for h, w in ((5, 7), (16, 9)):
        m = (rng.random((h, w)) > 0.6).astype(np.uint8)
        m[0, 0] = 1  # runs must start with an empty zero-run
        for compressed in (True, False):
            np.testing.assert_array_equal(rle_to_mask(mask_to_rle(m, compressed), h, w), m)
    with pytest.raises(ValueError, match=r'ann 7.*sum to 8'):
        rle_to_mask(dict(size=[3, 3], counts=[4, 4]), 3, 3, source='ann 7')
    with pytest.raises(ValueError, match=r'size \[3, 3\] differs'):
        rle_to_mask(dict(size=[3, 3], counts='414'), 4, 3)


def test_polygons_rasterise_exactly_and_merge():
    # integer rectangle corners: the boundary rows/columns are inside
    m = polygons_to_mask([[2, 1, 6, 1, 6, 4, 2, 4]], 8, 10)
    expected = np.zeros((8, 10), np.uint8)
    expected[1:5, 2:7] = 1
    np.testing.assert_array_equal(m, expected)
    # two overlapping parts of one object: union (no even-odd hole in the overlap)
    both = segmentation_to_mask([[0, 0, 4, 0, 4, 4, 0, 4], [2, 2, 7, 2, 7, 7, 2, 7]], 8, 8)
    ref = np.zeros((8, 8), np.uint8)
    ref[0:5, 0:5] = 1
    ref[2:8, 2:8] = 1
    np.testing.assert_array_equal(both, ref)
    with pytest.raises(ValueError, match='ann 5: polygon 0 has 5 coordinates'):
        polygons_to_mask([[0, 0, 1, 1, 2]], 4, 4, source='ann 5')


# -------------------------------------------------------------------------- safe pickle
class _Evil:
    """Unpickling it would create a directory."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (os.mkdir, (self.path,))


def test_restricted_unpickler(tmp_path):
    good = tmp_path / 'good.p'
    data = [dict(a=1, b=[1.5, 'x', (2, 3)], c={1, 2}, d=None)]
    good.write_bytes(pickle.dumps(data, protocol=0))  # protocol 0 rebuilds sets by name
    assert load_plain_pickle(str(good)) == data
    evil = tmp_path / 'evil.p'
    target = tmp_path / 'pwned'
    evil.write_bytes(pickle.dumps([_Evil(str(target))]))
    with pytest.raises(UnsafePickleError, match=r'evil\.p.*(posix|os)\.mkdir'):
        load_plain_pickle(str(evil))
    assert not target.exists()
    trunc = tmp_path / 'trunc.p'
    trunc.write_bytes(pickle.dumps(data)[:10])
    with pytest.raises(pickle.UnpicklingError, match=r'trunc\.p: not a readable pickle'):
        load_plain_pickle(str(trunc))


# ------------------------------------------------------------------------------- loader
def test_split_matching_rule():
    assert ref_in_split('train', 'train') and not ref_in_split('val', 'train')
    assert ref_in_split('testA', 'test') and ref_in_split('testB', 'test')
    assert ref_in_split('testA', 'testA') and not ref_in_split('testB', 'testA')
    assert ref_in_split('testAB', 'testB') and not ref_in_split('train', 'testA')


def test_loader_samples_sentences_and_splits(syn):
    refs = pickle.load(open(osp.join(syn['data_root'], REFS_FILE), 'rb'))
    for split in ('train', 'val', 'testA', 'testB'):
        ds = _dataset(syn['data_root'], split)
        assert len(ds) == syn['num_sentences'][split]
        split_refs = [r for r in refs if r['split'] == split]
        # one sample per (ref, sentence), in file order, with the cleaned sentence
        expected = [(r['ref_id'], s['sent_id'], s['sent']) for r in split_refs
                    for s in r['sentences']]
        got = [(ds.get_data_info(i)['ref_id'], ds.get_data_info(i)['sent_id'],
                ds.get_data_info(i)['sentence']) for i in range(len(ds))]
        assert got == expected
        for i in range(len(ds)):
            info = ds.get_data_info(i)
            assert osp.isfile(info['img_path'])  # image name from instances.json
            assert info['sentences_of_ref'] == 2
    test = _dataset(syn['data_root'], 'test')
    assert len(test) == syn['num_sentences']['testA'] + syn['num_sentences']['testB']
    raw = _dataset(syn['data_root'], 'val', sentence_key='raw')
    assert raw.get_data_info(0)['sentence'] == raw.get_data_info(0)['sentence'].capitalize()
    assert raw.get_data_info(0)['sentence'] != _dataset(syn['data_root']).get_data_info(0)[
        'sentence']


def test_mask_is_the_referred_object(syn):
    pipeline = [dict(type='LoadImageFromFile'), dict(type='LoadReferringAnnotation')]
    ds = _dataset(syn['data_root'], 'train', pipeline)
    seen_square = False
    for i in range(len(ds)):
        out = ds[i]
        gt, img = out['gt_seg_map'], out['img']
        assert gt.dtype == np.uint8 and gt.shape == img.shape[:2]
        np.testing.assert_array_equal(gt, syn['masks'][out['ann_id']])
        # the expression's colour is the colour painted under the mask (BGR image)
        words = out['sentence'].split()
        color = next(w for w in words if w in COLORS)
        mean_rgb = img[gt == 1][:, ::-1].mean(0)
        assert np.abs(mean_rgb - np.array(COLORS[color])).max() < 12, out['sentence']
        if 'square' in words:  # independent check: the filled integer box
            x = out['segmentation'][0][0::2]
            y = out['segmentation'][0][1::2]
            box = np.zeros_like(gt)
            box[int(min(y)):int(max(y)) + 1, int(min(x)):int(max(x)) + 1] = 1
            np.testing.assert_array_equal(gt, box)
            seen_square = True
    assert seen_square


def test_rle_annotations_give_the_same_masks(syn, tmp_path):
    generate_referring_dataset(str(tmp_path), splits=SPLITS, seed=3, size=64, rle=True)
    coco = json.load(open(tmp_path / INSTANCES_FILE))
    assert all(isinstance(a['segmentation'], dict) for a in coco['annotations'])
    pipeline = [dict(type='LoadReferringAnnotation')]
    poly_ds = _dataset(syn['data_root'], 'val', pipeline)
    rle_ds = _dataset(str(tmp_path), 'val', pipeline)
    assert len(poly_ds) == len(rle_ds)
    for i in range(len(rle_ds)):
        np.testing.assert_array_equal(rle_ds[i]['gt_seg_map'], poly_ds[i]['gt_seg_map'])


def test_loader_errors(syn, tmp_path):
    root = syn['data_root']
    with pytest.raises(ValueError, match="unknown split 'testC'"):
        _dataset(root, 'testC')
    with pytest.raises(FileNotFoundError, match=r'refs pickle .*refs\(umd\)\.p not found'):
        RefCOCODataset(data_root=root, ann_file='refsyn/refs(umd).p',
                       instances_file=INSTANCES_FILE, split='val')
    with pytest.raises(FileNotFoundError, match=r'instances file .*nope\.json not found'):
        RefCOCODataset(data_root=root, ann_file=REFS_FILE, instances_file='nope.json',
                       split='val')
    # a split absent from the file: clear message with the splits it has
    generate_referring_dataset(str(tmp_path / 'tv'), splits=dict(train=1, val=1), seed=0)
    with pytest.raises(ValueError, match=r"no refs in split 'testA'.*\['train', 'val'\]"):
        _dataset(str(tmp_path / 'tv'), 'testA')
    # an unsafe refs pickle is refused, naming the file
    bad = tmp_path / 'bad'
    generate_referring_dataset(str(bad), splits=dict(val=1), seed=0)
    (bad / REFS_FILE).write_bytes(pickle.dumps([_Evil(str(tmp_path / 'pwned'))]))
    with pytest.raises(UnsafePickleError, match=r'refs\(unc\)\.p'):
        _dataset(str(bad), 'val')
    assert not (tmp_path / 'pwned').exists()
    # a ref pointing to a missing annotation names the ref id
    refs = load_plain_pickle(osp.join(root, REFS_FILE))
    val_refs = [r for r in refs if r['split'] == 'val']
    val_refs[1]['ann_id'] = 999999
    (bad / REFS_FILE).write_bytes(pickle.dumps(val_refs))
    shutil.copy(osp.join(root, INSTANCES_FILE), bad / INSTANCES_FILE)
    with pytest.raises(ValueError, match=f"ref {val_refs[1]['ref_id']} points to annotation "
                                         '999999'):
        _dataset(str(bad), 'val')
    # a ref without sentences
    del val_refs[0]['sentences']
    (bad / REFS_FILE).write_bytes(pickle.dumps(val_refs))
    with pytest.raises(ValueError, match=f"ref {val_refs[0]['ref_id']} lacks keys "
                                         r"\['sentences'\]"):
        _dataset(str(bad), 'val')


# ------------------------------------------------------------------------------ pipelines
def _cfg(name):
    return Config.fromfile(osp.join(ROOT, 'configs/_base_/datasets', name))


def test_synthetic_config_pipeline_carries_sentence(syn):
    cfg = _cfg('synthetic_referring.py')
    ds_cfg = cfg.val_dataloader.dataset.copy()
    ds_cfg['data_root'] = syn['data_root']
    ds = DATASETS.build(ds_cfg)
    out = ds[0]
    sample = out['data_samples']
    info = ds.get_data_info(0)
    assert sample.metainfo['sentence'] == info['sentence'] and info['sentence']
    assert sample.metainfo['ref_id'] == info['ref_id']
    assert out['inputs'].shape == (3, 64, 64)
    gt = sample.gt_sem_seg.data
    assert gt.shape == (1, 64, 64) and set(gt.unique().tolist()) == {0, 1}
    # mmseg's own PackSegInputs would drop the sentence: the reason PackReferringInputs exists
    plain = TRANSFORMS.build(dict(type='PackSegInputs'))
    res = TRANSFORMS.build(dict(type='LoadReferringAnnotation'))(
        TRANSFORMS.build(dict(type='LoadImageFromFile'))(ds.get_data_info(0)))
    assert 'sentence' not in plain(res)['data_samples'].metainfo

    # scoring the ground truth as the prediction gives 100 everywhere
    metric = METRICS.build(cfg.val_evaluator)
    for i in range(len(ds)):
        s = ds[i]['data_samples']
        s.pred_sem_seg = PixelData(data=s.gt_sem_seg.data.clone())
        metric.process({}, [s.to_dict()])
    res = metric.evaluate(len(ds))
    assert res == {k: 100.0 for k in ('oIoU', 'mIoU', 'Prec@0.5', 'Prec@0.6', 'Prec@0.7',
                                      'Prec@0.8', 'Prec@0.9')}


def test_refcoco_config_letterboxes_to_480(syn, tmp_path):
    cfg = _cfg('refcoco.py')
    assert cfg.crop_size == (480, 480)
    assert cfg.data_preprocessor['mean'] == [127.5] * 3 == cfg.data_preprocessor['std']
    # training batches and test inputs are both padded to 480x480 (letterbox)
    assert cfg.data_preprocessor['size'] == cfg.data_preprocessor['test_cfg']['size'] == (480, 480)
    syn_cfg = _cfg('synthetic_referring.py').data_preprocessor
    assert syn_cfg['size'] == syn_cfg['test_cfg']['size'] == (64, 64)
    assert cfg.val_dataloader.dataset.split == 'val'
    assert cfg.train_dataloader.dataset.split == 'train'
    ds_cfg = cfg.train_dataloader.dataset.copy()
    ds_cfg.update(data_root=syn['data_root'], ann_file=REFS_FILE,
                  instances_file=INSTANCES_FILE, data_prefix=dict(img_path='images'))
    out = DATASETS.build(ds_cfg)[0]
    assert out['inputs'].shape == (3, 480, 480)  # 64x64 upscaled to 480, square: no padding
    assert out['data_samples'].metainfo['sentence']
    gt = out['data_samples'].gt_sem_seg.data
    assert gt.shape == (1, 480, 480) and set(gt.unique().tolist()) == {0, 1}

    # a landscape 48x64 image: scaled by 7.5 to 360x480, then padded at the bottom
    from mmcv.transforms import Compose
    from PIL import Image
    img_path = str(tmp_path / 'wide.png')
    Image.fromarray(np.full((48, 64, 3), 200, np.uint8)).save(img_path)
    results = dict(img_path=img_path, sentence='the box', height=48, width=64,
                   segmentation=[[8, 8, 23, 8, 23, 23, 8, 23]], seg_fields=[],
                   reduce_zero_label=False)
    out = Compose(cfg.train_pipeline)(results)
    assert out['inputs'].shape == (3, 480, 480)
    assert (out['inputs'][:, 360:] == 0).all() and (out['inputs'][:, :360] == 200).all()
    gt = out['data_samples'].gt_sem_seg.data[0]
    assert (gt[360:] == 255).all() and set(gt[:360].unique().tolist()) == {0, 1}
    assert gt[60:180, 60:180].eq(1).all() and gt[:60].eq(0).all()  # box 8..23 scaled x7.5
    assert out['data_samples'].metainfo['sentence'] == 'the box'


# --------------------------------------------------------------------------------- metric
def _sample(pred, gt):
    s = SegDataSample(gt_sem_seg=PixelData(data=torch.as_tensor(gt)[None]),
                      pred_sem_seg=PixelData(data=torch.as_tensor(pred)[None]))
    return s.to_dict()


def _hand_samples():
    """Three 4x4 samples with (I, U) = (8, 8), (1, 5), (3, 5): IoU 1.0, 0.2, 0.6."""
    g1 = np.zeros((4, 4), np.int64)
    g1[:2] = 1
    p1 = g1.copy()
    g2 = np.zeros((4, 4), np.int64)
    g2[0, :2] = 1
    p2 = np.zeros((4, 4), np.int64)
    p2[0, 0] = 1
    p2[3, :3] = 1
    g3 = np.zeros((4, 4), np.int64)
    g3[1, :4] = 1
    g3[2, 0] = 1
    p3 = np.zeros((4, 4), np.int64)
    p3[1, :3] = 1
    return [_sample(p1, g1), _sample(p2, g2), _sample(p3, g3)]


def test_metric_hand_computed():
    metric = METRICS.build(dict(type='ReferringIoUMetric'))
    metric.process({}, _hand_samples())
    assert metric.results == [(8, 8), (1, 5), (3, 5)]
    res = metric.evaluate(3)
    # oIoU = 12 / 18, mIoU = (1 + 0.2 + 0.6) / 3: they differ
    assert res['oIoU'] == 66.67 and res['mIoU'] == 60.0
    # Prec@K counts IoU >= K: 0.6 passes 0.6 but not 0.7
    assert res['Prec@0.5'] == res['Prec@0.6'] == 66.67
    assert res['Prec@0.7'] == res['Prec@0.8'] == res['Prec@0.9'] == 33.33
    assert list(res) == ['oIoU', 'mIoU', 'Prec@0.5', 'Prec@0.6', 'Prec@0.7', 'Prec@0.8',
                         'Prec@0.9']


def test_metric_collection_over_ranks_is_exact():
    """Two ranks' per-sample results concatenated (what mmengine's collect_results does)
    give the single-process numbers; averaging per-rank metrics would not."""
    samples = _hand_samples()
    whole = METRICS.build(dict(type='ReferringIoUMetric'))
    whole.process({}, samples)
    rank0 = METRICS.build(dict(type='ReferringIoUMetric'))
    rank0.process({}, samples[:1])
    rank1 = METRICS.build(dict(type='ReferringIoUMetric'))
    rank1.process({}, samples[1:])
    merged = rank0.compute_metrics(rank0.results + rank1.results)
    assert merged == whole.compute_metrics(whole.results)
    per_rank_mean = (rank0.compute_metrics(rank0.results)['oIoU'] +
                     rank1.compute_metrics(rank1.results)['oIoU']) / 2
    assert abs(per_rank_mean - merged['oIoU']) > 1


def test_metric_ignore_index_and_edge_cases():
    gt = np.zeros((2, 4), np.int64)
    gt[0, :2] = 1
    gt[1, :2] = 255
    pred = np.zeros((2, 4), np.int64)
    pred[0, :2] = 1
    pred[1, :2] = 1  # predicted foreground on ignored pixels: neither I nor U
    metric = METRICS.build(dict(type='ReferringIoUMetric'))
    metric.process({}, [_sample(pred, gt)])
    assert metric.results == [(2, 2)]
    # ignored ground-truth foreground-looking pixels are not missed foreground either
    metric.process({}, [_sample(np.zeros((2, 4), np.int64), gt)])
    assert metric.results[-1] == (0, 2)
    # empty target and empty prediction: IoU 1 (a correct "nothing")
    metric.results = []
    metric.process({}, [_sample(np.zeros((2, 2), np.int64), np.zeros((2, 2), np.int64))])
    assert metric.evaluate(1)['mIoU'] == 100.0
    with pytest.raises(ValueError, match='differ in size'):
        metric.process({}, [_sample(np.zeros((2, 2), np.int64), np.zeros((3, 2), np.int64))])
    with pytest.raises(ValueError, match='thresholds'):
        METRICS.build(dict(type='ReferringIoUMetric', thresholds=(0.5, 1.5)))


def _dist_worker(rank, world_size, port, out_file):
    import torch.distributed as dist
    dist.init_process_group('gloo', init_method=f'tcp://127.0.0.1:{port}', rank=rank,
                            world_size=world_size)
    try:
        from mmseg_ovseg.evaluation import ReferringIoUMetric
        metric = ReferringIoUMetric()
        samples = _hand_samples()
        metric.process({}, samples[rank::world_size])  # DefaultSampler's interleaved shards
        res = metric.evaluate(len(samples))  # mmengine gathers (I, U) pairs from all ranks
        if rank == 0:
            with open(out_file, 'w') as f:
                json.dump(res, f)
    finally:
        dist.destroy_process_group()


def test_metric_two_process_gloo(tmp_path):
    """A real two-rank evaluation (gloo, CPU) equals the single-process numbers."""
    import socket

    import torch.multiprocessing as mp
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    out_file = str(tmp_path / 'res.json')
    # fork: the workers reuse this process's imports (spawn would re-import mmseg, ~8 s)
    mp.start_processes(_dist_worker, args=(2, port, out_file), nprocs=2, join=True,
                       start_method='fork')
    single = METRICS.build(dict(type='ReferringIoUMetric'))
    single.process({}, _hand_samples())
    assert json.load(open(out_file)) == single.evaluate(3)
