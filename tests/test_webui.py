"""tools/webui.py: the page's logic as plain functions (vocabulary through the parser it
shares with tools/infer.py, mmseg_ovseg.apis.vocabulary; the model cache, the area table,
one-line errors) and, where gradio is installed, the real page served on a local port and
called with gradio's Python client."""
import os.path as osp
import socket

import cv2
import numpy as np
import pytest
import torch

from mmseg_ovseg.apis.vocabulary import resolve_class_names
from mmseg_ovseg.clip.vocabularies import get_vocabulary
from mmseg_ovseg.models.language.word_vocab import WordVocabulary
from tool_loader import load_tool

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIG = 'configs/san_tiny_synthetic.py'  # relative: the page resolves it from the repo
RESTR_CONFIG = osp.join(REPO, 'configs', 'restr_tiny_synthetic.py')

webui = load_tool('webui')


def image(h=40, w=56, seed=0):
    return np.random.RandomState(seed).randint(0, 255, (h, w, 3), dtype=np.uint8)


@pytest.fixture(scope='module')
def cache():
    return webui.ModelCache(random_weights=True)


def check_error(result, *needles):
    overlay, rows, status = result
    assert overlay is None and rows == []
    assert status.startswith('**Error:** ') and '\n' not in status, status
    assert 'Traceback' not in status
    for needle in needles:
        assert needle in status, (needle, status)


# ----------------------------------------------------------------------------- vocabulary
def test_vocabulary_goes_through_the_infer_parser(monkeypatch):
    assert webui.parse_vocabulary(webui.CUSTOM, 'cat, dog\ngrass ') == ['cat', 'dog', 'grass']
    assert webui.parse_vocabulary(webui.CUSTOM, 'cat') == ['cat']  # one name, not a vocab
    assert webui.parse_vocabulary('ade150', '') == get_vocabulary('ade150')
    assert webui.parse_vocabulary(webui.MODEL_CLASSES, '  ') is None
    # the page does not parse by itself: it calls resolve_class_names (tools/infer.py's too)
    calls = []

    def fake(**kwargs):
        calls.append(kwargs)
        return ['from infer.py']

    monkeypatch.setattr(webui, 'resolve_class_names', fake)
    assert webui.parse_vocabulary(webui.CUSTOM, 'a,b') == ['from infer.py']
    assert webui.parse_vocabulary('voc20', '') == ['from infer.py']
    assert calls[0]['classes'] == 'a,b' and calls[1]['vocabulary'] == 'voc20'


def test_vocabulary_errors_name_the_field():
    cases = [((webui.CUSTOM, ' , '), ['Class names', 'holds no class name']),
             ((webui.CUSTOM, ''), ['Class names: empty']),
             ((webui.CUSTOM, 'cat,dog\ncat'), ['duplicate class names: cat']),
             (('nope', ''), ["unknown vocabulary 'nope'", 'ade150']),
             (('ade150', 'cat'), ['Class names and Vocabulary exclude each other']),
             ((webui.MODEL_CLASSES, 'cat'), ["model's classes", 'exclude'])]
    for args, needles in cases:
        with pytest.raises(ValueError) as info:
            webui.parse_vocabulary(*args)
        for needle in needles:
            assert needle in str(info.value), (args, str(info.value))
    # the CLI keeps its flag names in the same messages
    with pytest.raises(ValueError, match="--vocabulary: unknown vocabulary 'nope'"):
        resolve_class_names(vocabulary='nope')


# ----------------------------------------------------------------------------- area table
def test_area_table_counts_every_present_class_and_sums_to_100():
    classes = ['background', 'cat', 'dog', 'grass']
    label = np.zeros((7, 9), np.int64)  # 63 pixels: background 40, cat 3, grass 20
    label[0, :3] = 1
    label[4:, 2:] = 3
    label[6, 8] = 3
    rows = webui.area_table(label, classes)
    counts = {name: px for name, px, _ in rows}
    assert counts == {'background': int((label == 0).sum()), 'cat': 3,
                      'grass': int((label == 3).sum())}
    assert 'dog' not in counts  # absent classes are not listed
    assert [r[1] for r in rows] == sorted([r[1] for r in rows], reverse=True)
    assert sum(r[1] for r in rows) == label.size
    assert abs(sum(r[2] for r in rows) - 100.0) <= 0.01 * len(rows)
    for name, px, pct in rows:
        assert isinstance(pct, float) and pct == round(100 * px / 63, 2)
    assert webui.area_table(np.full((2, 2), 2), classes) == [['dog', 4, 100.0]]
    with pytest.raises(ValueError, match='index 4, but there are 4 classes'):
        webui.area_table(np.full((2, 2), 4), classes)


# ----------------------------------------------------------------------------- requests
@pytest.mark.slow
def test_request_with_random_weights_caches_the_model(cache):
    img = image()
    overlay, rows, status = webui.run_request(cache, CONFIG, '', img, webui.CUSTOM,
                                              'red circle, green square\nbackground')
    assert not status.startswith('**Error'), status
    assert overlay.dtype == np.uint8 and overlay.shape[0] == 40 and overlay.shape[1] > 56
    assert not np.array_equal(overlay[:, :56], img)  # painted
    assert {r[0] for r in rows} <= {'red circle', 'green square', 'background'}
    assert sum(r[1] for r in rows) == 40 * 56
    assert abs(sum(r[2] for r in rows) - 100.0) <= 0.01 * len(rows)
    inferencer = cache.get(CONFIG, None)
    assert inferencer.classes == ['red circle', 'green square', 'background']
    # another vocabulary, then the model's own classes: the same model, re-encoded names
    _, _, status = webui.run_request(cache, CONFIG, '', img, webui.CUSTOM, 'cat')
    assert "'background' is added as class 0" in status  # the inferencer's note, shown
    assert inferencer.classes == ['background', 'cat']
    _, rows, status = webui.run_request(cache, CONFIG, '', img, webui.MODEL_CLASSES, '')
    assert inferencer.classes == inferencer.default_classes == get_vocabulary('synthetic')
    assert 'SAN' in status and cache.builds == 1
    # the table matches the label map the model predicts
    overlay, label, classes = webui.segment(inferencer, img)
    assert label.shape == (40, 56) and classes == get_vocabulary('synthetic')
    assert webui.area_table(label, classes) == rows


def test_bad_input_is_one_line_on_the_page(cache, tmp_path):
    img = image()
    check_error(webui.run_request(cache, CONFIG, '', img, webui.CUSTOM, 'cat, dog, cat'),
                'duplicate class names: cat')
    check_error(webui.run_request(cache, CONFIG, '', img, webui.CUSTOM, ' ,, '),
                'holds no class name')
    check_error(webui.run_request(cache, CONFIG, '', img, 'cats', ''),
                "unknown vocabulary 'cats'")
    check_error(webui.run_request(cache, CONFIG, '', None, webui.CUSTOM, 'cat'), 'no image')
    check_error(webui.run_request(cache, 'configs/nope.py', '', img, webui.CUSTOM, 'cat'),
                'config file not found', 'nope.py')
    check_error(webui.run_request(cache, '', '', img, webui.CUSTOM, 'cat'), 'no config')
    check_error(webui.run_request(cache, CONFIG, str(tmp_path / 'x.pth'), img, webui.CUSTOM,
                                  'cat'), 'checkpoint not found', 'x.pth')
    check_error(webui.run_request(cache, CONFIG, '', img, webui.CUSTOM, 'cat', 'the cat'),
                'the Sentence is for referring models')
    # without --random-weights an empty checkpoint is refused, with the way out
    check_error(webui.run_request(webui.ModelCache(), CONFIG, ' ', img, webui.CUSTOM, 'cat'),
                'no checkpoint', '--random-weights')


@pytest.mark.slow
def test_checkpoint_is_loaded_and_keyed(cache, tmp_path):
    model = cache.get(CONFIG, None).model
    state = {k: v.clone() for k, v in model.state_dict().items()}
    key = next(k for k, v in state.items() if v.is_floating_point() and v.numel() > 4)
    state[key] = torch.full_like(state[key], 0.125)
    path = tmp_path / 'tiny.pth'
    torch.save(dict(state_dict=state, meta={}), path)
    strict = webui.ModelCache()  # no --random-weights: a checkpoint is required and used
    inferencer = strict.get(CONFIG, str(path))
    assert torch.equal(inferencer.model.state_dict()[key], state[key])
    assert strict.get(osp.join(REPO, CONFIG), str(path)) is inferencer  # same files, same
    overlay, rows, status = webui.run_request(strict, CONFIG, str(path), image(),
                                              webui.MODEL_CLASSES, '')
    assert overlay is not None and strict.builds == 1, status


@pytest.mark.slow
def test_referring_config_takes_a_sentence(tmp_path):
    vocab = tmp_path / 'vocab.txt'
    WordVocabulary(['the', 'red', 'circle', 'blue', 'square', 'left']).save(str(vocab))
    cache = webui.ModelCache(random_weights=True,
                             cfg_options={'model.language_encoder.vocab_file': str(vocab)})
    img = image(64, 64)
    overlay, rows, status = webui.run_request(cache, RESTR_CONFIG, '', img,
                                              webui.MODEL_CLASSES, '', 'the red circle')
    assert overlay is not None and overlay.shape[0] == 64, status
    assert "sentence: 'the red circle'" in status
    assert {r[0] for r in rows} <= {'background', 'the red circle'}
    assert sum(r[1] for r in rows) == 64 * 64
    check_error(webui.run_request(cache, RESTR_CONFIG, '', img, webui.CUSTOM, '', ''),
                'referring model: type a Sentence')
    check_error(webui.run_request(cache, RESTR_CONFIG, '', img, webui.CUSTOM, 'cat',
                                  'the circle'), 'not by class names')
    check_error(webui.run_request(cache, RESTR_CONFIG, '', img, webui.CUSTOM, '',
                                  'the zebra circle'), "'zebra'", '<unk>')
    assert cache.builds == 1


def test_command_line_refuses_bad_presets_before_serving(tmp_path):
    cases = [(['--vocabulary', 'nope'], ValueError, "unknown vocabulary 'nope'"),
             (['--config', str(tmp_path / 'no.py')], FileNotFoundError, 'config file not found'),
             (['--image', str(tmp_path / 'no.png')], FileNotFoundError, 'image not found'),
             (['--cache-size', '0'], ValueError, '--cache-size'),
             (['--device', 'gpu0'], ValueError, "invalid device 'gpu0'")]
    for argv, error, needle in cases:
        with pytest.raises(error, match=needle):
            webui.main(argv)


# ----------------------------------------------------------------------------- the page
def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_page_served_and_called_with_the_gradio_client(cache, tmp_path, monkeypatch):
    pytest.importorskip('gradio')
    client_mod = pytest.importorskip('gradio_client')
    monkeypatch.setenv('GRADIO_ANALYTICS_ENABLED', 'False')
    path = tmp_path / 'scene.png'
    cv2.imwrite(str(path), image(36, 50, seed=3)[..., ::-1])
    app = webui.build_app(cache, CONFIG)
    port = free_port()
    app.queue().launch(server_name='127.0.0.1', server_port=port, prevent_thread_lock=True,
                       quiet=True, share=False)
    try:
        client = client_mod.Client(f'http://127.0.0.1:{port}/', verbose=False)
        overlay, table, status = client.predict(
            CONFIG, '', client_mod.handle_file(str(path)), webui.CUSTOM,
            'red circle, background', '', 0.5, True, api_name='/segment')
        assert not status.startswith('**Error'), status
        picture = cv2.imread(overlay)
        assert picture.shape[0] == 36 and picture.shape[1] > 50, picture.shape
        assert table['headers'] == webui.TABLE_HEADERS
        assert sum(int(r[1]) for r in table['data']) == 36 * 50
        assert {r[0] for r in table['data']} <= {'red circle', 'background'}
        # bad names: the page answers with the message, not an exception
        overlay, table, status = client.predict(
            CONFIG, '', client_mod.handle_file(str(path)), webui.CUSTOM, 'cat,cat', '', 0.5,
            True, api_name='/segment')
        assert overlay is None and status.startswith('**Error:** duplicate class names: cat')
        assert 'Traceback' not in status
    finally:
        app.close()
