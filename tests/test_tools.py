"""Command-line tools on the tiny synthetic config: train.py, test.py, infer.py, benchmark.py,
get_flops.py, and the OpenVocabInferencer API. Training runs 2 iterations on 4 images."""
import json
import os
import os.path as osp
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from mmseg_ovseg.datasets.synthetic import generate_synthetic_dataset
from tool_loader import load_tool

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIG = osp.join(REPO, 'configs', 'baseline_tiny_synthetic.py')
PY = sys.executable

pytestmark = pytest.mark.slow  # every test here takes seconds


def short_options(data_root, max_iters=2):
    """--cfg-options making the tiny config train/test in seconds on a tiny dataset."""
    opts = [f'train_cfg.max_iters={max_iters}', 'train_cfg.val_interval=1000',
            f'default_hooks.checkpoint.interval={max_iters}', 'default_hooks.logger.interval=1',
            'train_dataloader.batch_size=2']
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        opts += [f'{loader}.num_workers=0', f'{loader}.persistent_workers=False',
                 f'{loader}.dataset.data_root={data_root}']
    return opts


def run(args, **kwargs):
    env = dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS='1')
    env.update(kwargs.pop('env', {}))
    proc = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300,
                          cwd=kwargs.pop('cwd', REPO), **kwargs)
    return proc, proc.stdout + proc.stderr


@pytest.fixture(scope='module')
def data_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('synthetic'))
    generate_synthetic_dataset(root, num_train=4, num_val=2, seed=0, size=64)
    return root


@pytest.fixture(scope='module')
def config_without_imports(tmp_path_factory):
    """The tiny config minus `custom_imports`: the tools must register the plugin themselves."""
    path = tmp_path_factory.mktemp('cfg') / 'no_custom_imports.py'
    path.write_text(f'_base_ = [{CONFIG!r}]\ncustom_imports = None\n')
    return str(path)


@pytest.fixture(scope='module')
def trained(data_root, config_without_imports, tmp_path_factory):
    work_dir = str(tmp_path_factory.mktemp('work'))
    # `--gpus 1` is what `mim train` appends (mim#157): accepted and ignored.
    proc, out = run([PY, 'tools/train.py', config_without_imports, '--work-dir', work_dir,
                     '--gpus', '1',
                     '--cfg-options'] + short_options(data_root))
    assert proc.returncode == 0, out[-3000:]
    assert '--gpus 1 ignored' in out
    ckpt = osp.join(work_dir, 'iter_2.pth')
    assert osp.isfile(ckpt), os.listdir(work_dir)
    return work_dir, ckpt


def test_train_resume(trained, data_root, tmp_path):
    # a copy of the run: the checkpoint hook keeps one file, other tests need iter_2.pth
    _, ckpt = trained
    work_dir = str(tmp_path)
    shutil.copy(ckpt, work_dir)
    with open(osp.join(work_dir, 'last_checkpoint'), 'w') as f:
        f.write(osp.join(work_dir, 'iter_2.pth'))
    proc, out = run([PY, 'tools/train.py', CONFIG, '--work-dir', work_dir, '--resume',
                     '--cfg-options'] + short_options(data_root, max_iters=3))
    assert proc.returncode == 0, out[-3000:]
    assert 'resumed epoch: 0, iter: 2' in out
    assert 'Iter(train) [3/3]' in out and 'Iter(train) [1/3]' not in out
    assert osp.isfile(osp.join(work_dir, 'iter_3.pth'))


def test_train_bad_config_path():
    proc, out = run([PY, 'tools/train.py', 'configs/no_such_config.py'])
    assert proc.returncode != 0
    assert 'config file not found: configs/no_such_config.py' in out


def test_test_py_evaluates_checkpoint(trained, data_root, config_without_imports, tmp_path):
    _, ckpt = trained
    out_dir = tmp_path / 'preds'
    proc, out = run([PY, 'tools/test.py', config_without_imports, ckpt,
                     '--work-dir', str(tmp_path / 'w'),
                     '--out', str(out_dir), '--cfg-options'] + short_options(data_root))
    assert proc.returncode == 0, out[-3000:]
    assert 'mIoU' in out and 'Iter(test) [2/2]' in out
    preds = sorted(os.listdir(out_dir))
    assert len(preds) == 2 and all(p.endswith('.png') for p in preds)
    label = np.array(Image.open(out_dir / preds[0]))
    assert label.shape == (64, 64) and label.max() < 8


def test_test_py_missing_checkpoint(tmp_path):
    proc, out = run([PY, 'tools/test.py', CONFIG, str(tmp_path / 'nope.pth')])
    assert proc.returncode != 0
    assert f'checkpoint file not found: {tmp_path / "nope.pth"}' in out


def test_infer_py_writes_label_and_overlay(trained, data_root, tmp_path):
    _, ckpt = trained
    image = osp.join(data_root, 'img_dir', 'val', sorted(os.listdir(
        osp.join(data_root, 'img_dir', 'val')))[0])
    classes = 'background,red circle,green square'
    infer = load_tool('infer')
    written = infer.main(['--config', CONFIG, '--checkpoint', ckpt, '--images', image,
                          '--classes', classes, '--out-dir', str(tmp_path)])
    name = osp.splitext(osp.basename(image))[0]
    label_file, overlay_file = (str(tmp_path / f'{name}_label.png'),
                                str(tmp_path / f'{name}_overlay.png'))
    assert written == [label_file, overlay_file]
    label = np.array(Image.open(label_file))
    assert label.shape == (64, 64) and label.dtype == np.uint8 and label.max() < 3
    overlay = cv2.imread(overlay_file)[..., ::-1]  # RGB
    # overlay = picture + legend panel on the right, a swatch of each predicted class's
    # colour (keyed by class name)
    assert overlay.shape[0] >= 64 and overlay.shape[1] > 64
    from mmseg_ovseg.apis import class_palette
    palette = class_palette(classes.split(','))
    panel = overlay[:, 64:]
    for cls in np.unique(label):
        assert (panel == palette[cls]).all(axis=-1).any(), classes.split(',')[cls]


def test_infer_py_bad_image_path(tmp_path):
    missing = str(tmp_path / 'missing.png')
    proc, out = run([PY, 'tools/infer.py', '--config', CONFIG, '--images', missing,
                     '--random-weights'])
    assert proc.returncode != 0
    assert f'image file not found: {missing}' in out


def test_inferencer_api(tmp_path):
    from mmseg_ovseg.apis import OpenVocabInferencer
    vocab_file = tmp_path / 'vocab.txt'
    vocab_file.write_text('sky\ntree\nroad\ncar\n')
    inferencer = OpenVocabInferencer(CONFIG, classes=str(vocab_file), templates='single')
    assert inferencer.classes == ['sky', 'tree', 'road', 'car']
    assert inferencer.model.decode_head.num_classes == 4
    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, 255, (48, 40, 3), dtype=np.uint8),
              rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)]
    samples = inferencer(arrays)
    assert [tuple(s.pred_sem_seg.data.shape) for s in samples] == [(1, 48, 40), (1, 32, 32)]
    assert samples[0].seg_logits.data.shape[0] == 4
    inferencer.set_vocabulary('cat, dog')
    assert inferencer.classes == ['cat', 'dog']
    sample = inferencer(arrays[0])[0]
    assert int(sample.pred_sem_seg.data.max()) < 2
    drawn = inferencer.visualize(arrays[0], sample, str(tmp_path / 'vis.png'))
    assert drawn.shape[1] > 40 and osp.isfile(tmp_path / 'vis.png')

    bad = tmp_path / 'broken.png'
    bad.write_bytes(b'not an image')
    with pytest.raises(ValueError, match='broken.png'):
        inferencer(str(bad))
    with pytest.raises(FileNotFoundError, match='nothere.jpg'):
        inferencer(str(tmp_path / 'nothere.jpg'))
    with pytest.raises(ValueError, match=r'\(5, 5\)'):
        inferencer(np.zeros((5, 5), np.uint8))
    with pytest.raises(FileNotFoundError, match='missing.pth'):
        OpenVocabInferencer(CONFIG, checkpoint=str(tmp_path / 'missing.pth'))


def test_benchmark_models_function():
    bench = load_tool('analysis_tools/benchmark')
    x = torch.randn(1, 3, 32, 32)
    conv = torch.nn.Conv2d(3, 8, 3)
    res = bench.benchmark_models({'a': lambda t: t + 1, 'conv': conv}, x, warmup=1, runs=3)
    assert set(res) == {'a', 'conv'}
    for r in res.values():
        assert r['runs'] == 3 and 0 < r['min_ms'] <= r['median_ms']
        assert r['threads'] == torch.get_num_threads() and r['peak_mem_mb'] >= 0
    with pytest.raises(ValueError, match='runs'):
        bench.benchmark_models({'a': conv}, x, runs=0)


def test_benchmark_cli_with_reference(tmp_path, capsys):
    bench = load_tool('analysis_tools/benchmark')
    out = tmp_path / 'bench.json'
    bench.main([CONFIG, '--reference-config', CONFIG, '--shape', '64', '64', '--warmup', '1',
                '--runs', '2', '--threads', '1', '--out', str(out)])
    printed = capsys.readouterr().out
    assert '| median ms |' in printed and 'reference:baseline_tiny_synthetic' in printed
    report = json.loads(out.read_text())
    assert report['input_shape'] == [1, 3, 64, 64]
    results = report['results']
    assert len(results) == 2
    for r in results.values():
        assert r['threads'] == 1 and r['median_ms'] > 0 and 'ratio_to_reference' in r
    assert results['reference:baseline_tiny_synthetic']['ratio_to_reference'] == 1.0


def test_get_flops():
    flops = load_tool('analysis_tools/get_flops').get_flops(CONFIG, shape=(64, 64))
    assert flops['flops'] > 0 and flops['params'] > 0
    # attention matmuls are counted by our handle (mmengine 0.10.7 has none)
    assert 'aten::scaled_dot_product_attention' not in flops['unsupported']
    assert 'aten::linear' not in flops['unsupported']


def run_benchmark(tmp_path, *args):
    """``tools/analysis_tools/benchmark.py ARGS --out JSON`` in a subprocess; returns the
    process and the JSON report."""
    out = tmp_path / 'benchmark.json'
    res = subprocess.run([sys.executable,
                          osp.join(REPO, 'tools', 'analysis_tools', 'benchmark.py'), *args,
                          '--out', str(out)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    return res, json.loads(out.read_text())


def test_benchmark_against_mmseg_san_tiny(tmp_path):
    """The SAN-vs-mmseg comparison runs end to end (tiny widths) and checks parity."""
    res, report = run_benchmark(tmp_path, '--against-mmseg-san', '--tiny', '--shape', '96',
                                '128', '--runs', '2', '--warmup', '1', '--threads', '1',
                                '--vocabulary', 'cat,dog,grass,sky,person')
    assert set(report['results']) == {'mmseg SAN', 'ours fp32', 'ours bf16'}
    for r in report['results'].values():
        assert len(r['interleaved_ratios']) == 2 and r['median_ms'] > 0
    assert report['results']['mmseg SAN']['ratio'] == 1.0
    assert report['checks']['fp32_max_abs_diff'] < 1e-4
    assert 0 <= report['checks']['bf16_argmax_agreement'] <= 1 and report['checks']['ok']
    assert '| ours bf16 |' in res.stdout


def test_benchmark_kernels_tiny(tmp_path):
    """--kernels times each of our CPU kernels against PyTorch's op and checks they agree."""
    _, report = run_benchmark(tmp_path, '--kernels', '--tiny', '--runs', '2', '--threads', '1')
    kernels = report['kernels']
    assert len(kernels) == 4
    for name, row in kernels.items():
        assert row['base_ms'] > 0 and row['ours_ms'] > 0 and row['ratio'] > 0
        # bf16 attention: bf16 rounding of the scores; float32 linear: summation order only
        assert row['max_abs_diff'] < (0.05 if 'bf16' in name else 1e-4), (name, row)


def test_benchmark_gemm_tiny(tmp_path):
    """--gemm times the four GEMM variants per shape, relative to float32 F.linear, and says
    which CPU capability torch dispatches to."""
    SAN_GEMM_SHAPES = load_tool('analysis_tools/benchmark').SAN_GEMM_SHAPES
    res, report = run_benchmark(tmp_path, '--gemm', '--tiny', '--runs', '3', '--threads', '1')
    assert set(report['shapes']) == set(SAN_GEMM_SHAPES) and report['isa']
    variants = {'fp32 F.linear', 'fp32 oneDNN prepacked', 'bf16 F.linear', 'fp16 F.linear'}
    for rows in report['shapes'].values():
        assert set(rows) == variants
        assert all(r['ms'] > 0 and r['gflops'] > 0 for r in rows.values())
        assert rows['fp32 F.linear']['rate_vs_fp32'] == 1.0
    assert set(report['summary']) == variants and report['summary']['fp32 F.linear'] == 1.0
    assert 'median rate vs fp32 F.linear' in res.stdout


def test_infer_py_keeps_labels_only(trained, data_root, tmp_path, monkeypatch):
    """infer.py sets test_cfg.keep_logits=False (no full-size score map): the same label maps
    as with the scores kept, and no ``seg_logits`` in the samples it writes from."""
    from mmseg_ovseg.apis import OpenVocabInferencer
    _, ckpt = trained
    val = osp.join(data_root, 'img_dir', 'val')
    images = []
    for i, name in enumerate(sorted(os.listdir(val))):  # other sizes than the model's input:
        img = cv2.imread(osp.join(val, name))           # the scores are resized
        size = ((97, 150), (211, 64))[i % 2]
        images.append(str(tmp_path / f'{i}.png'))
        cv2.imwrite(images[-1], cv2.resize(img, size, interpolation=cv2.INTER_NEAREST))
    samples = {}
    original = OpenVocabInferencer.iter_predictions

    def recording(self, *args, **kwargs):
        for path, sample in original(self, *args, **kwargs):
            samples.setdefault(run_name, []).append(sample)
            yield path, sample

    monkeypatch.setattr(OpenVocabInferencer, 'iter_predictions', recording)
    infer = load_tool('infer')
    labels = {}
    for run_name, extra in (('default', []),
                            ('logits', ['--cfg-options', 'model.test_cfg.keep_logits=True'])):
        out = tmp_path / run_name
        written = infer.main(['--config', CONFIG, '--checkpoint', ckpt, '--images', *images,
                              '--vocabulary', 'synthetic', '--out-dir', str(out),
                              '--no-progress'] + extra)
        labels[run_name] = [np.array(Image.open(p)) for p in written if p.endswith('_label.png')]
    assert len(labels['default']) == len(images) == 2
    for a, b, path in zip(labels['default'], labels['logits'], images):
        assert a.shape == cv2.imread(path).shape[:2]
        np.testing.assert_array_equal(a, b)
    assert len(np.unique(np.concatenate([a.ravel() for a in labels['default']]))) > 1
    assert all('seg_logits' not in s and 'pred_sem_seg' in s for s in samples['default'])
    assert all('seg_logits' in s for s in samples['logits'])
    # what infer.py does to the model, on the segmentors that do not support it
    from mmseg_ovseg.models.segmentors import ReSTR
    assert infer.drop_logits(object.__new__(ReSTR)) is False


@pytest.fixture(scope='module')
def nested_root(data_root, tmp_path_factory):
    """The val images in two sub-folders under the same file names: a/x.png and b/x.png."""
    root = tmp_path_factory.mktemp('nested')
    names = sorted(os.listdir(osp.join(data_root, 'img_dir', 'val')))[:2]
    for sub, name in zip(('a', 'b'), names):
        for kind in ('img_dir', 'ann_dir'):
            os.makedirs(root / kind / 'val' / sub)
            shutil.copy(osp.join(data_root, kind, 'val', name), root / kind / 'val' / sub / 'x.png')
    return str(root)


def test_test_py_out_mirrors_folders(trained, nested_root, config_without_imports, tmp_path):
    """a/x.png and b/x.png: two prediction files, each the model's prediction of its image
    (mmseg's output_dir writes out/x.png twice, the second overwriting the first)."""
    from mmseg_ovseg.apis import OpenVocabInferencer
    _, ckpt = trained
    out_dir = tmp_path / 'preds'
    test = load_tool('test')
    metrics = test.main([config_without_imports, ckpt, '--work-dir', str(tmp_path / 'w'),
                         '--out', str(out_dir), '--cfg-options'] + short_options(nested_root))
    assert 'mIoU' in metrics  # the evaluation still runs
    written = sorted(osp.relpath(osp.join(d, f), out_dir)
                     for d, _, files in os.walk(out_dir) for f in files)
    assert written == ['a/x.png', 'b/x.png']
    inferencer = OpenVocabInferencer(config_without_imports, ckpt)
    preds = []
    for sub in ('a', 'b'):
        label = np.array(Image.open(out_dir / sub / 'x.png'))
        image = osp.join(nested_root, 'img_dir', 'val', sub, 'x.png')
        expected = inferencer(image)[0].pred_sem_seg.data[0].numpy()
        np.testing.assert_array_equal(label, expected)
        preds.append(label)
    assert not np.array_equal(*preds)


def test_prediction_writer_collision_and_wide_labels(tmp_path):
    """Inputs outside the image folder keep their file name only: two of the same name are
    refused with both named before the second is written; labels beyond 255 are uint16;
    ``reduce_zero_label`` adds 1 as mmseg's IoUMetric does; referring samples get their
    sentence id."""
    writer = load_tool('test').PredictionWriter(str(tmp_path / 'out'),
                                                image_roots=[str(tmp_path / 'img')])

    def sample(path, label, **meta):
        return dict(img_path=str(path), pred_sem_seg=dict(data=torch.tensor(label)[None]),
                    **meta)

    wide = np.array([[0, 300], [846, 7]])
    writer.process({}, [sample(tmp_path / 'img' / 'a' / 'x.jpg', wide),
                        sample(tmp_path / 'else' / 'y.jpg', np.array([[0, 149]]),
                               reduce_zero_label=True),
                        sample(tmp_path / 'img' / 'r.jpg', np.array([[1]]), sent_id=5),
                        sample(tmp_path / 'img' / 'r.jpg', np.array([[0]]), sent_id=6)])
    read = Image.open(tmp_path / 'out' / 'a' / 'x.png')
    np.testing.assert_array_equal(np.array(read), wide)
    np.testing.assert_array_equal(np.array(Image.open(tmp_path / 'out' / 'y.png')), [[1, 150]])
    assert np.array(Image.open(tmp_path / 'out' / 'y.png')).dtype == np.uint8
    assert np.array(Image.open(tmp_path / 'out' / 'r_sent6.png')).tolist() == [[0]]
    assert np.array(Image.open(tmp_path / 'out' / 'r_sent5.png')).tolist() == [[1]]

    first = str(tmp_path / 'else' / 'y.jpg')
    second = str(tmp_path / 'other' / 'y.jpg')
    with pytest.raises(ValueError, match=f'{first} and {second} would both be written to '
                       f'{tmp_path / "out" / "y.png"}'):
        writer.process({}, [sample(second, np.array([[3, 3]]))])
    # the first one's file is intact
    np.testing.assert_array_equal(np.array(Image.open(tmp_path / 'out' / 'y.png')), [[1, 150]])
    # across processes: found when the results of all ranks are put together
    results = writer.results + [(str(tmp_path / 'out' / 'y.png'), second)]
    with pytest.raises(ValueError, match='by different processes'):
        writer.compute_metrics(results)
    assert writer.compute_metrics(writer.results) == {}
