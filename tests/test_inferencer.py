"""Inference front door (issue 11): OpenVocabInferencer on mmseg's MMSegInferencer, the
referring inferencer (ReSTR, out-of-vocabulary words), dataset_meta following the vocabulary
through mmseg's own APIs, tools/infer.py through main(argv), clip_pretrained reaching every CLIP
tower. CLIP weights loaded in init_weights are tested in test_clip_init_weights.py, the overlay
in test_overlay.py."""
import os
import os.path as osp

import cv2
import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmseg.registry import MODELS
from PIL import Image

import mmseg_ovseg  # noqa: F401
from mmseg_ovseg.apis import (
    OpenVocabInferencer,
    ReferringInferencer,
    class_palette,
    merge_cfg_options,
)
from mmseg_ovseg.apis.config import clip_towers
from mmseg_ovseg.clip.builder import create_clip
from mmseg_ovseg.models.language.word_vocab import WordVocabulary
from tool_loader import load_tool

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIGS = osp.join(REPO, 'configs')
CONFIG = osp.join(CONFIGS, 'baseline_tiny_synthetic.py')
RESTR_CONFIG = osp.join(CONFIGS, 'restr_tiny_synthetic.py')
SAN_FULL = osp.join(CONFIGS, 'san_vitb16_coco-stuff.py')


def build(config, **options):
    cfg = merge_cfg_options(Config.fromfile(config), options)
    init_default_scope('mmseg')
    return MODELS.build(cfg.model)


def png(path, size=(32, 40), seed=0):
    os.makedirs(osp.dirname(str(path)), exist_ok=True)
    img = np.random.RandomState(seed).randint(0, 255, (*size, 3), dtype=np.uint8)
    assert cv2.imwrite(str(path), img)
    return str(path)


@pytest.fixture(scope='module')
def ckpt(tmp_path_factory):
    """A checkpoint of the tiny config (random weights) with mmengine's meta."""
    torch.manual_seed(0)
    model = build(CONFIG)
    path = tmp_path_factory.mktemp('ckpt') / 'tiny.pth'
    torch.save(dict(state_dict=model.state_dict(),
                    meta=dict(dataset_meta=dict(classes=list(model.vocabulary),
                                                palette=[[i, i, i] for i in range(8)]))),
               path)
    return str(path)


@pytest.fixture(scope='module')
def inferencer(ckpt):
    return OpenVocabInferencer(CONFIG, ckpt)


# ------------------------------------------------------------ dataset_meta and mmseg's APIs
def test_dataset_meta_follows_the_vocabulary():
    model = build(CONFIG)
    assert model.dataset_meta['classes'] == model.vocabulary
    model.vocabulary = ['cat', 'dog', 'grass']  # assignment is set_vocabulary
    assert model.decode_head.num_classes == 3
    assert model.dataset_meta == dict(classes=['cat', 'dog', 'grass'],
                                      palette=class_palette(['cat', 'dog', 'grass']))
    # a palette set for the same classes (mmseg's init_model from the checkpoint) is kept
    model.dataset_meta = dict(classes=['cat', 'dog', 'grass'], palette=[[1, 2, 3]] * 3,
                              reduce_zero_label=False)
    assert model.dataset_meta['palette'] == [[1, 2, 3]] * 3
    assert model.dataset_meta['reduce_zero_label'] is False
    model.set_vocabulary(['sky', 'cat'])
    assert model.dataset_meta['classes'] == ['sky', 'cat']
    assert model.dataset_meta['palette'] == class_palette(['sky', 'cat'])
    with pytest.warns(UserWarning, match='differ from the model vocabulary'):
        model.dataset_meta = dict(classes=['a', 'b', 'c'], palette=[[0, 0, 0]] * 3)
    assert model.dataset_meta['classes'] == ['sky', 'cat']


def _capture_visualizer_classes(monkeypatch):
    from mmseg.visualization import SegLocalVisualizer
    seen = []
    original = SegLocalVisualizer.add_datasample

    def spy(self, *args, **kwargs):
        seen.append(list(self.dataset_meta['classes']))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(SegLocalVisualizer, 'add_datasample', spy)
    return seen


@pytest.mark.slow
def test_mmseg_init_model_inference_and_show_result_label_the_new_vocabulary(
        ckpt, tmp_path, monkeypatch):
    from mmseg.apis import inference_model, init_model, show_result_pyplot
    seen = _capture_visualizer_classes(monkeypatch)
    model = init_model(CONFIG, ckpt, device='cpu')
    assert model.dataset_meta['classes'] == model.vocabulary  # the checkpoint's meta
    assert model.dataset_meta['palette'] == [[i, i, i] for i in range(8)]
    model.set_vocabulary(['sky', 'cat', 'dog'])
    image = png(tmp_path / 'a.png')
    result = inference_model(model, image)
    assert int(result.pred_sem_seg.data.max()) < 3
    show_result_pyplot(model, image, result, show=False, draw_gt=False,
                       out_file=str(tmp_path / 'vis.png'))
    assert seen == [['sky', 'cat', 'dog']]


@pytest.mark.slow
def test_mmseg_inferencer_labels_the_new_vocabulary(ckpt, tmp_path, monkeypatch):
    from mmseg.apis import MMSegInferencer
    seen = _capture_visualizer_classes(monkeypatch)
    mmseg_inf = MMSegInferencer(CONFIG, weights=ckpt, device='cpu')
    mmseg_inf.model.set_vocabulary(['sky', 'cat'])
    out = mmseg_inf(png(tmp_path / 'a.png'), return_vis=True)
    assert out['predictions'].max() < 2
    assert seen == [['sky', 'cat']]


# ------------------------------------------------------------------ OpenVocabInferencer
def test_inferencer_is_mmseg_inferencer_with_classes_and_templates(ckpt, tmp_path):
    from mmseg.apis import MMSegInferencer
    inf = OpenVocabInferencer(CONFIG, ckpt, classes=['sky', 'cat', 'dog'], templates='single')
    assert isinstance(inf, MMSegInferencer)
    assert inf.classes == ['sky', 'cat', 'dog'] and inf.model.decode_head.num_classes == 3
    # one custom class: 'background' is added, else every pixel would be that class
    with pytest.warns(UserWarning, match="'background' is added"):
        inf.set_vocabulary(['cat'])
    assert inf.classes == ['background', 'cat']
    with pytest.raises(TypeError, match='sentences= is for referring models'):
        inf(png(tmp_path / 'a.png'), sentences='a cat')


@pytest.mark.slow
def test_inferencer_folders_batches_and_out_dir(inferencer, tmp_path):
    a = png(tmp_path / 'in' / 'x.png', seed=1)
    b = png(tmp_path / 'in' / 'sub' / 'x.png', seed=2)
    c = png(tmp_path / 'in' / 'sub' / 'deeper' / 'y.jpg', seed=3)
    (tmp_path / 'in' / 'notes.md').write_text('not an image')
    one = inferencer([a, b, c])
    batched = inferencer(str(tmp_path / 'in'), batch_size=2)  # folder, recursive
    assert [s.img_path for s in batched] == [a, b, c]  # a folder's files, then sub-folders
    by_path = {s.img_path: s for s in one}
    for s in batched:  # same-size images: batching changes nothing
        torch.testing.assert_close(s.seg_logits.data, by_path[s.img_path].seg_logits.data)
    # mmseg's dict, and the out_dir layout (names mirror the input folders)
    out = inferencer(str(tmp_path / 'in' / '**' / '*.png'), return_datasamples=False,
                     out_dir=str(tmp_path / 'out'), return_vis=True)
    assert len(out['predictions']) == 2 and out['predictions'][0].shape == (32, 40)
    assert out['visualization'][0].shape[0] >= 32  # the legend may be taller
    for rel in ('x', 'sub/x'):
        label = np.array(Image.open(tmp_path / 'out' / 'pred' / f'{rel}_pred.png'))
        assert label.shape == (32, 40)
        assert (tmp_path / 'out' / 'vis' / f'{rel}.png').is_file()
    arrays = inferencer([np.zeros((20, 24, 3), np.uint8)], return_datasamples=False)
    assert arrays['predictions'].shape == (20, 24)
    (tmp_path / 'empty_dir').mkdir()
    with pytest.raises(ValueError, match='no image files'):
        inferencer(str(tmp_path / 'empty_dir'))
    with pytest.raises(FileNotFoundError, match='no image files match'):
        inferencer(str(tmp_path / 'in' / '*.gif'))
    with pytest.raises(ValueError, match='batch_size'):
        inferencer(a, batch_size=0)


def test_inferencer_without_checkpoint_runs_init_weights(tmp_path):
    """No checkpoint: the towers' init_weights loads the CLIP file named by clip_pretrained
    (one variable for every tower, through merge_cfg_options)."""
    clip_cfg = Config.fromfile(CONFIG).model.backbone.clip_model
    clip = create_clip(clip_cfg)
    path = tmp_path / 'clip.pt'
    torch.save(clip.state_dict(), path)
    inf = OpenVocabInferencer(CONFIG, cfg_options=dict(clip_pretrained=str(path)))
    model = inf.model
    assert model.backbone.pretrained == model.text_encoder.pretrained == str(path)
    assert torch.equal(model.backbone.visual.conv1.weight, clip.visual.conv1.weight)
    assert torch.equal(model.text_encoder.text_projection, clip.text_projection)


# -------------------------------------------------------------------- referring (ReSTR)
@pytest.fixture(scope='module')
def restr_vocab(tmp_path_factory):
    path = tmp_path_factory.mktemp('restr') / 'vocab.txt'
    WordVocabulary(['the', 'red', 'circle', 'blue', 'square', 'left']).save(str(path))
    return str(path)


@pytest.mark.slow
def test_referring_inferencer_reports_unknown_words(restr_vocab, tmp_path):
    opts = {'model.language_encoder.vocab_file': restr_vocab}
    inf = ReferringInferencer(RESTR_CONFIG, cfg_options=opts)
    image = png(tmp_path / 'a.png', (64, 64))
    assert inf.unknown_words('The zebra left of the striped circle.') == ['zebra', 'of',
                                                                         'striped']
    with pytest.raises(ValueError, match=r"'zebra', 'striped'.*<unk>"):
        inf(image, sentences='the zebra left the striped circle')
    with pytest.warns(UserWarning, match="'zebra'"):
        inf(image, sentences='the zebra', oov='warn')
    out = inf([image, image], sentences=['the red circle', 'the blue square'])
    assert [s.sentence for s in out] == ['the red circle', 'the blue square']
    assert out[0].pred_sem_seg.data.shape == (1, 64, 64)
    assert int(out[0].pred_sem_seg.data.max()) <= 1
    picture = inf.visualize(image, out[0])
    assert picture.shape[0] == 64 and picture.shape[1] > 64
    with pytest.raises(ValueError, match='2 sentences for 1 images'):
        inf(image, sentences=['a', 'b'])
    with pytest.raises(TypeError, match='segments by a sentence'):
        inf.set_vocabulary(['cat', 'dog'])
    with pytest.raises(TypeError, match='not a referring model'):
        ReferringInferencer(CONFIG)


# ----------------------------------------------------------------------- tools/infer.py
def infer_main(argv, capsys):
    """Run tools/infer.py's main as its __main__ does; (status, stdout, stderr)."""
    from mmseg_ovseg.utils.cli import run_cli
    capsys.readouterr()
    try:
        rc = run_cli(load_tool('infer').main, 'infer.py', [str(a) for a in argv])
    except SystemExit as e:
        rc = e.code
    out, err = capsys.readouterr()
    return rc, out, err


def one_error_line(err, *needles):
    lines = [ln for ln in err.splitlines() if ln.startswith('infer.py: error: ')]
    assert len(lines) == 1 and 'Traceback' not in err, err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def test_infer_py_usage_errors_exit_2(ckpt, tmp_path, capsys):
    image = png(tmp_path / 'a.png')
    base = ['--config', CONFIG, '--images', image, '--out-dir', tmp_path / 'out']
    cases = [
        ([], ['--checkpoint is required', '--random-weights']),
        (['--checkpoint', ckpt, '--random-weights'], ['exclude each other']),
        (['--random-weights', '--classes', ' , '], ['holds no class name']),
        (['--random-weights', '--classes', 'a', '--vocabulary', 'ade150'], ['not allowed']),
        (['--random-weights', '--vocabulary', 'cat'], ["unknown vocabulary 'cat'", 'ade150']),
        (['--random-weights', '--classes-file', tmp_path / 'nope.txt'], ['nope.txt']),
        (['--random-weights', '--classes', 'cat,cat'], ['duplicate class names: cat']),
        (['--random-weights', '--batch-size', '0'], ['--batch-size']),
        (['--random-weights', '--sentence', 'a cat'], ['--sentence is for referring']),
    ]
    for extra, needles in cases:
        rc, _, err = infer_main(base + extra, capsys)
        assert rc == 2, (extra, err)
        one_error_line(err, *needles)


@pytest.mark.slow
def test_infer_py_vocabulary_syntax_inputs_and_outputs(ckpt, tmp_path, capsys):
    d = tmp_path / 'imgs'
    a = png(d / 'a.png', seed=1)
    png(d / 'deep' / 'a.png', seed=2)
    c = png(tmp_path / 'other' / 'c.jpg', seed=3)
    lst = tmp_path / 'list.txt'
    lst.write_text(f'# images\n{c}\n')
    out = tmp_path / 'out'
    common = ['--config', CONFIG, '--checkpoint', ckpt, '--out-dir', out, '--no-progress']
    # a single custom class works ('background' is added and said so)
    rc, stdout, err = infer_main(common + ['--images', d, lst, '--classes', 'cat'], capsys)
    assert rc == 0, err
    assert 'classes (2): background, cat' in stdout and "'background' is added" in err
    for rel in ('imgs/a', 'imgs/deep/a', 'other/c'):
        assert (out / f'{rel}_label.png').is_file() and (out / f'{rel}_overlay.png').is_file()
    # nothing is overwritten without --overwrite; with it, comma/newline lists and batches
    before = (out / 'imgs/a_label.png').stat().st_mtime_ns
    rc, _, err = infer_main(common + ['--images', d, lst, '--classes', 'cat,dog'], capsys)
    assert rc == 1
    one_error_line(err, 'already exist', '--overwrite')
    assert (out / 'imgs/a_label.png').stat().st_mtime_ns == before
    rc, stdout, err = infer_main(common + ['--images', str(d / '**' / '*.png'), '--classes',
                                           'cat, dog\ngrass', '--batch-size', '2',
                                           '--overwrite', '--no-background'], capsys)
    assert rc == 0, err
    assert 'classes (3): cat, dog, grass' in stdout
    label = np.array(Image.open(out / 'deep' / 'a_label.png'))
    assert label.shape == (32, 40) and label.max() < 3
    # names with commas from a file; a registered vocabulary
    names = tmp_path / 'names.txt'
    names.write_text('wall, brick wall\nsky\n')
    rc, stdout, err = infer_main(common + ['--images', a, '--classes-file', names,
                                           '--overwrite'], capsys)
    assert rc == 0 and 'classes (2): wall, brick wall, sky' in stdout, err
    rc, stdout, err = infer_main(common + ['--images', a, '--vocabulary', 'voc20',
                                           '--overwrite'], capsys)
    assert rc == 0 and 'classes (20): aeroplane' in stdout, err
    rc, _, err = infer_main(common + ['--images', tmp_path / 'other' / '*.png'], capsys)
    assert rc == 1
    one_error_line(err, 'no image files match')


@pytest.mark.slow
def test_infer_py_referring_sentence(restr_vocab, tmp_path, capsys):
    image = png(tmp_path / 'a.png', (64, 64))
    common = ['--config', RESTR_CONFIG, '--random-weights', '--images', image, '--out-dir',
              tmp_path / 'out', '--no-progress', '--overwrite', '--cfg-options',
              f'model.language_encoder.vocab_file={restr_vocab}']
    rc, stdout, err = infer_main(common + ['--sentence', 'the red circle'], capsys)
    assert rc == 0, err
    assert 'sentence: the red circle' in stdout
    assert set(np.unique(np.array(Image.open(tmp_path / 'out' / 'a_label.png')))) <= {0, 1}
    rc, _, err = infer_main(common + ['--sentence', 'the zebra'], capsys)
    assert rc == 1
    one_error_line(err, "'zebra'", '<unk>', 'oov')
    rc, _, err = infer_main(common + ['--classes', 'cat,dog'], capsys)
    assert rc == 2
    one_error_line(err, 'referring model', '--sentence')


# ----------------------------------------------- clip_pretrained in every config
@pytest.mark.slow
def test_clip_pretrained_is_one_variable_for_every_tower():
    """Every shipped config that names clip_pretrained passes it to all its CLIP towers, and
    --cfg-options clip_pretrained=X changes all of them (mmengine alone changes none)."""
    checked = 0
    for name in sorted(os.listdir(CONFIGS)):
        if not name.endswith('.py'):
            continue
        cfg = Config.fromfile(osp.join(CONFIGS, name))
        towers = clip_towers(cfg.model)
        if 'clip_pretrained' in cfg:
            assert towers, name
            for where, tower in towers:  # None: a random-CLIP control on purpose
                assert tower.get('pretrained') in (cfg.clip_pretrained, None), (name, where)
            checked += 1
        plain = Config.fromfile(osp.join(CONFIGS, name))
        plain.merge_from_dict({'clip_pretrained': 'x.pt'})
        if towers:
            merged = merge_cfg_options(Config.fromfile(osp.join(CONFIGS, name)),
                                       {'clip_pretrained': 'x.pt'})
            assert all(t['pretrained'] == 'x.pt' for _, t in clip_towers(merged.model)), name
            if 'clip_pretrained' in cfg and cfg.clip_pretrained != 'x.pt':
                assert all(t['pretrained'] != 'x.pt' for _, t in clip_towers(plain.model))
    assert checked >= 8


