"""Inference front door (issue 11): OpenVocabInferencer on mmseg's MMSegInferencer, the
referring inferencer (ReSTR, out-of-vocabulary words), dataset_meta following the vocabulary
through mmseg's own APIs, tools/infer.py through main(argv), CLIP weights loaded in
init_weights (models that load a checkpoint never read them), and the overlay."""
import os
import os.path as osp
import warnings

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
    draw_overlay,
    merge_cfg_options,
    name_color,
)
from mmseg_ovseg.apis.config import clip_towers
from mmseg_ovseg.apis.overlay import font_for, text_size_for
from mmseg_ovseg.apis.palette import MIN_DISTANCE
from mmseg_ovseg.clip.builder import create_clip
from mmseg_ovseg.models.backbones.clip_vit import CLIPVisionTransformer
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


# ----------------------------------------------- CLIP weights through init_weights
def _tiny_clip_file(tmp_path, clip_cfg):
    torch.manual_seed(1)
    clip = create_clip(clip_cfg)
    path = tmp_path / 'clip.pt'
    torch.save(clip.state_dict(), path)
    return clip, str(path)


def test_vit_loads_clip_in_init_weights_once_and_in_place(tmp_path):
    cfg = Config.fromfile(CONFIG).model.backbone.clip_model
    clip, path = _tiny_clip_file(tmp_path, cfg)
    kwargs = dict(pretrained=path, pos_grid=(6, 5), fold_class_embedding=True,
                  interpolate_mode='bilinear')
    plain = CLIPVisionTransformer(cfg, **kwargs)  # no file read here
    missing = CLIPVisionTransformer(cfg, **dict(kwargs, pretrained=str(tmp_path / 'no.pt')))
    shapes = {k: v.shape for k, v in plain.state_dict().items()}
    assert {k: v.shape for k, v in missing.state_dict().items()} == shapes
    params = dict(plain.named_parameters())
    plain.init_weights()
    assert {k: v.shape for k, v in plain.state_dict().items()} == shapes
    assert all(p is params[k] for k, p in plain.named_parameters())  # optimizer-safe
    pos = clip.visual.positional_embedding.detach().clone()
    pos[0] += clip.visual.class_embedding.detach()  # fold, then resize: once
    from mmseg_ovseg.models.backbones.clip_vit import resize_clip_pos_embed
    expected = resize_clip_pos_embed(pos, plain.clip_grid, (6, 5), 1, 'bilinear')
    torch.testing.assert_close(plain.visual.positional_embedding.detach(), expected)
    plain.init_weights()  # mmengine: a second call does nothing
    torch.testing.assert_close(plain.visual.positional_embedding.detach(), expected)
    plain.load_clip_weights(path)  # a new load starts again from the file
    torch.testing.assert_close(plain.visual.positional_embedding.detach(), expected)
    with pytest.raises(FileNotFoundError, match='no.pt'):
        missing.init_weights()


@pytest.mark.slow
def test_runner_training_runs_init_weights(tmp_path):
    """mmengine's Runner calls model.init_weights() in train(): the CLIP file named by
    clip_pretrained reaches both (frozen) towers."""
    from mmengine.runner import Runner

    from mmseg_ovseg.datasets.synthetic import generate_synthetic_dataset
    cfg = Config.fromfile(CONFIG)
    clip, path = _tiny_clip_file(tmp_path, cfg.model.backbone.clip_model)
    root = str(tmp_path / 'data')
    generate_synthetic_dataset(root, num_train=2, num_val=1, seed=0, size=32)
    opts = {'clip_pretrained': path, 'work_dir': str(tmp_path / 'work'),
            'train_cfg.max_iters': 1, 'train_cfg.val_interval': 100,
            'train_dataloader.batch_size': 1, 'train_dataloader.dataset.data_root': root,
            'val_dataloader.dataset.data_root': root, 'test_dataloader.dataset.data_root': root,
            'default_hooks.checkpoint.interval': 100, 'model.backbone.frozen': True}
    runner = Runner.from_cfg(merge_cfg_options(cfg, opts))
    runner.train()
    model = runner.model
    assert torch.equal(model.backbone.visual.conv1.weight, clip.visual.conv1.weight)
    assert torch.equal(model.text_encoder.token_embedding.weight,
                       clip.token_embedding.weight)


@pytest.mark.slow
def test_full_config_loads_a_checkpoint_without_the_clip_file(tmp_path):
    """init_model(san_vitb16_coco-stuff.py, ckpt) and our inferencer with the CLIP file
    (pretrained/ViT-B-16.pt) absent: the checkpoint holds every weight."""
    from mmseg.apis import init_model
    cfg = Config.fromfile(SAN_FULL)
    assert not osp.exists(osp.join(REPO, cfg.clip_pretrained))
    assert not osp.exists(cfg.clip_pretrained)
    torch.manual_seed(0)
    model = build(SAN_FULL)
    path = tmp_path / 'san.pth'
    torch.save(dict(state_dict=model.state_dict(),
                    meta=dict(dataset_meta=dict(classes=list(model.vocabulary)))), path)
    loaded = init_model(SAN_FULL, str(path), device='cpu')
    for key in ('backbone.visual.positional_embedding', 'text_encoder.text_projection'):
        assert torch.equal(loaded.state_dict()[key], model.state_dict()[key])
    del loaded
    inf = OpenVocabInferencer(SAN_FULL, str(path), classes=['cat', 'dog', 'sky'],
                              templates='single')
    assert inf.classes == ['cat', 'dog', 'sky']
    key = 'backbone.visual.transformer.resblocks.0.attn.in_proj_weight'
    assert torch.equal(inf.model.state_dict()[key], model.state_dict()[key])


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


@pytest.mark.slow
def test_get_flops_cfg_options(capsys):
    get_flops = load_tool('analysis_tools/get_flops')
    full = get_flops.get_flops(CONFIG, (32, 32))
    res = get_flops.main([CONFIG, '--shape', '32', '32', '--cfg-options',
                          'model.vocabulary=cat,dog', 'clip_pretrained=no_such_file.pt'])
    assert 0 < res['flops'] < full['flops']  # 2 classes instead of 8 in the class matmul
    assert 'Flops:' in capsys.readouterr().out


# ---------------------------------------------------------------------------- overlay
def test_palette_is_keyed_by_name():
    names = ['background', 'cat', 'dog', 'grass', 'sky', 'tree', 'road', 'car']
    pal = dict(zip(names, class_palette(names)))
    shuffled = names[::-1]
    assert dict(zip(shuffled, class_palette(shuffled))) == pal
    assert class_palette(['Cat ']) == class_palette(['cat'])
    # the colour of a name, unless a similar colour is taken in the same vocabulary
    assert class_palette(['cat', 'grass'])[0] == name_color('cat')
    assert class_palette(['grass', 'cat'])[1] == name_color('cat')
    for i, a in enumerate(names):  # distinct colours within a palette
        for b in names[i + 1:]:
            assert np.linalg.norm(np.subtract(pal[a], pal[b])) >= MIN_DISTANCE, (a, b)


def _scene(size):
    h, w = size
    labels = np.zeros((h, w), np.int64)
    labels[h // 4:h // 2, w // 4:w // 2] = 1
    labels[h // 2:, w // 2:] = 2
    image = np.full((h, w, 3), 90, np.uint8)
    return image, labels


def _ink_rows(panel):
    """Rows of the legend panel holding dark (text) pixels."""
    return np.flatnonzero((panel.min(axis=2) < 60).any(axis=1))


def test_overlay_scales_with_the_image_and_keeps_the_image_unpainted():
    classes = ['background', 'cat', 'dog']
    pal = class_palette(classes)
    heights = {}
    for size in ((96, 128), (960, 1280)):
        image, labels = _scene(size)
        out = draw_overlay(image, labels, classes, pal, with_labels=False)
        panel = out[:, size[1]:]
        rows = _ink_rows(panel)
        heights[size] = rows[-1] - rows[0]
        assert panel.shape[1] > text_size_for(*size)
        # no background: its pixels are the image, the others blended at the opacity
        out = draw_overlay(image, labels, classes, pal, opacity=0.25, with_labels=False,
                           legend=False, draw_background=False)
        assert np.array_equal(out[labels == 0], image[labels == 0])
        cat = np.rint(image[0, 0] * 0.75 + np.array(pal[1]) * 0.25)
        assert np.array_equal(out[labels == 1][0], cat.astype(np.uint8))
    # legend text follows the image (12 px at least)
    ratio = text_size_for(960, 1280) / text_size_for(96, 128)
    assert ratio > 2 and heights[(960, 1280)] > 0.8 * ratio * heights[(96, 128)]
    out = draw_overlay(*_scene((64, 64)), classes, pal, opacity=0.0, legend=False,
                       with_labels=False)
    assert np.array_equal(out, _scene((64, 64))[0])


def test_overlay_draws_unicode_names_or_says_what_it_draws():
    image, labels = _scene((200, 200))
    greek = draw_overlay(image, labels, ['background', 'γάτα', 'dog'],
                         class_palette(['background', 'γάτα', 'dog']), with_labels=False)
    path, drawn = font_for('γάτα')
    if path is not None and drawn == 'γάτα':  # a font with Greek glyphs: drawn as such
        qmarks = draw_overlay(image, labels, ['background', '????', 'dog'],
                              class_palette(['background', 'γάτα', 'dog']), with_labels=False)
        assert not np.array_equal(greek, qmarks)
    cjk = '猫'
    font_for.cache_clear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        path, drawn = font_for(cjk)
    if drawn != cjk:  # no CJK font here: drawn as '?' and a warning names the character
        assert drawn == '?' and any(cjk in str(w.message) for w in caught)
    out = draw_overlay(image, labels, ['background', cjk, 'dog'],
                       class_palette(['background', cjk, 'dog']))
    assert out.shape[0] == 200 and out.shape[1] > 200
