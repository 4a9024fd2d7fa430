"""Batched slide inference and the memory-saving postprocessing of ``TextEncoderDecoder``.

References are mmseg's own code, called on our models: ``EncoderDecoder.slide_inference``
(one window at a time, every window's scores padded to the image and summed) and
``BaseSegmentor.postprocess_result`` (unpad, flip, resize the whole score map, argmax).
"""
import copy

import numpy as np
import pytest
import torch
from mmengine.config import Config, ConfigDict
from mmengine.structures import PixelData
from mmseg.models.segmentors import BaseSegmentor, EncoderDecoder
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample

from mmseg_ovseg.models.segmentors import dense_inference as ted
from mmseg_ovseg.models.segmentors.text_encoder_decoder import window_spans

CLIP = dict(
    embed_dim=32,
    vision_cfg=dict(image_size=64, layers=2, width=64, head_width=32, patch_size=16),
    text_cfg=dict(context_length=77, vocab_size=49408, width=32, heads=2, layers=1))


def _patch_text_model(text_encoder=None):
    """Tiny CLIP ViT + PatchTextHead; the text encoder is trainable (CoOp contexts) unless
    given, so nothing caches its output between calls."""
    text_encoder = text_encoder or dict(
        type='ContextCLIPTextEncoder', clip_model=CLIP, num_contexts=4, context_length=10)
    model = MODELS.build(dict(
        type='TextEncoderDecoder',
        vocabulary='synthetic',
        backbone=dict(type='CLIPVisionTransformer', clip_model=CLIP, out_indices=(1, ),
                      frozen=False, output_dense=True),
        text_encoder=text_encoder,
        decode_head=dict(type='PatchTextHead', in_channels=32, channels=32,
                         proj_type='mlp', dropout_ratio=0.0),
        test_cfg=dict(mode='whole')))
    return model.eval()


def _san_model():
    """The tiny SAN of configs/san_tiny_synthetic.py (random weights)."""
    cfg = Config.fromfile('configs/san_tiny_synthetic.py').model
    cfg.pop('data_preprocessor')
    return MODELS.build(cfg).eval()


def _metas(n, h, w):
    return [dict(ori_shape=(h, w), img_shape=(h, w), pad_shape=(h, w),
                 padding_size=[0, 0, 0, 0]) for _ in range(n)]


def _slide(model, crop, stride, batch_windows=None, **extra):
    cfg = dict(mode='slide', crop_size=crop, stride=stride, **extra)
    if batch_windows is not None:
        cfg['batch_windows'] = batch_windows
    model.test_cfg = ConfigDict(cfg)


def test_window_spans_follow_mmseg():
    # the last window is shifted back to end at the border; a crop over the image is cut
    assert window_spans(75, 32, 21) == [(0, 32), (21, 53), (42, 74), (43, 75)]
    assert window_spans(64, 32, 32) == [(0, 32), (32, 64)]
    assert window_spans(20, 32, 21) == [(0, 20)]
    with pytest.raises(ValueError, match='stride'):
        window_spans(64, 32, 0)


@pytest.mark.parametrize('batch_windows', [1, 3, 100])
@pytest.mark.slow
def test_batched_slide_equals_mmseg_one_window_at_a_time(batch_windows):
    """Odd image size, windows shifted back at the right/bottom borders, two images."""
    model = _patch_text_model()
    x = torch.randn(2, 3, 75, 101)
    _slide(model, (48, 64), (21, 30), batch_windows)
    with torch.no_grad():
        ref = EncoderDecoder.slide_inference(model, x, _metas(2, 75, 101))
        out = model.slide_inference(x, _metas(2, 75, 101))
    # 3 x 3 windows per image: batch 100 runs all 18 in one forward
    assert len(window_spans(75, 48, 21)) * len(window_spans(101, 64, 30)) == 9
    assert out.shape == ref.shape == (2, model.out_channels, 75, 101)
    assert out.dtype == ref.dtype
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-5)  # scores up to ~4.4
    # the images differ, so a window filed under the wrong image would show
    assert (ref[0] - ref[1]).abs().max() > 1e-2


@pytest.mark.parametrize('batch_windows', [1, 3, 64])
@pytest.mark.slow
def test_batched_slide_san_equals_mmseg(batch_windows):
    """Tiny SAN (patch 8, clip_scale 0.5): crop larger than the image in height, windows at
    the borders in width."""
    model = _san_model()
    x = torch.randn(1, 3, 48, 208)
    _slide(model, (64, 64), (48, 48), batch_windows)
    with torch.no_grad():
        ref = EncoderDecoder.slide_inference(model, x, _metas(1, 48, 208))
        out = model.slide_inference(x, _metas(1, 48, 208))
    assert out.shape == ref.shape == (1, 8, 48, 208)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-6)  # Eq. 4 scores up to ~0.013


def test_batch_windows_must_be_positive():
    model = _patch_text_model()
    _slide(model, (32, 32), (32, 32), 0)
    with pytest.raises(ValueError, match='batch_windows'):
        model.inference(torch.randn(1, 3, 64, 64), _metas(1, 64, 64))


def _count_calls(monkeypatch, obj, name):
    calls = []
    original = getattr(obj, name)

    def counted(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(obj, name, counted)
    return calls


@pytest.mark.parametrize('mode', ['whole', 'slide'])
@pytest.mark.slow
def test_class_embeddings_once_per_inference(monkeypatch, mode):
    """A trainable text encoder runs once per predict call, not once per window; in eval
    mode once per weights (the segmentor's cache), in training mode at every call."""
    model = _patch_text_model()
    encoder_calls = _count_calls(monkeypatch, model.text_encoder, 'forward')
    decode_calls = _count_calls(monkeypatch, model, 'encode_decode')
    if mode == 'slide':
        _slide(model, (32, 32), (24, 24), batch_windows=2)  # 3 x 3 windows per image
    samples = [SegDataSample(metainfo=m) for m in _metas(2, 80, 80)]
    with torch.no_grad():
        model.predict(torch.randn(2, 3, 80, 80), samples)
    assert len(decode_calls) == (9 if mode == 'slide' else 1)
    assert len(encoder_calls) == 1
    with torch.no_grad():
        model.predict(torch.randn(2, 3, 80, 80), samples)
    assert len(encoder_calls) == 1  # eval mode: cached while the contexts are unchanged
    with torch.no_grad():
        model.text_encoder.contexts.add_(0.1)  # an optimizer step / load_state_dict
        model.predict(torch.randn(2, 3, 80, 80), samples)
    assert len(encoder_calls) == 2  # computed again: the weights changed
    # in training mode the text is computed at every call
    model.train()
    model.extract_feat(torch.randn(1, 3, 32, 32))
    model.extract_feat(torch.randn(1, 3, 32, 32))
    assert len(encoder_calls) == 4


@pytest.mark.slow
def test_san_class_embeddings_once_per_inference(monkeypatch):
    model = _san_model()
    calls = _count_calls(monkeypatch, model.text_encoder, 'embed')
    _slide(model, (64, 64), (32, 32), batch_windows=3)  # 3 x 3 windows
    with torch.no_grad():
        model.inference(torch.randn(1, 3, 128, 128), _metas(1, 128, 128))
    assert len(calls) == 1


@pytest.mark.slow
def test_denseclip_text_features_once_per_inference(monkeypatch):
    cfg = Config.fromfile('configs/denseclip_tiny_synthetic.py').model
    cfg.pop('data_preprocessor')
    model = MODELS.build(cfg)
    # training mode recomputes the text features at every call: the memo is what shares them
    calls = _count_calls(monkeypatch, model, 'text_features')
    _slide(model, (64, 64), (32, 32), batch_windows=4)
    with torch.no_grad():
        model.inference(torch.randn(1, 3, 128, 128), _metas(1, 128, 128))
    assert len(calls) == 1


# ------------------------------------------------------------------ keep_logits=False
def _samples_with(metas):
    return [SegDataSample(metainfo=m) for m in metas]


@pytest.mark.parametrize('case', ['resize', 'pad_flip_h', 'pad_flip_v', 'same_size', 'none'])
def test_prediction_only_equals_mmseg_postprocess(monkeypatch, case):
    """Labels equal mmseg's (whole-map resize then argmax); class chunks of 3 of 7 classes,
    with exact ties across chunks (argmax keeps the first maximal class)."""
    model = _patch_text_model()
    monkeypatch.setattr(ted, '_RESIZE_CHUNK_BYTES', 3 * 4 * 60 * 90)  # 3 classes per chunk
    monkeypatch.setattr(ted, '_DIVIDE_BAND_ROWS', 16)  # running argmax in 4 bands of rows
    torch.manual_seed(1)
    logits = torch.randn(2, 7, 36, 52)
    logits[:, 5] = logits[:, 1]  # ties between chunks: class 1 must win
    logits[:, 2] = logits[:, 1]  # ties inside a chunk
    meta = dict(ori_shape=(60, 90), img_shape=(36, 52), pad_shape=(36, 52),
                padding_size=[0, 0, 0, 0])
    if case.startswith('pad_flip'):
        meta = dict(meta, padding_size=[0, 4, 0, 3], flip=True,
                    flip_direction='horizontal' if case.endswith('h') else 'vertical')
    elif case in ('same_size', 'none'):
        meta = dict(meta, ori_shape=(36, 52))
    metas = [meta, dict(meta)]
    make = (lambda: None) if case == 'none' else (lambda: _samples_with(metas))
    model.test_cfg = ConfigDict(mode='whole')
    ref = BaseSegmentor.postprocess_result(model, logits.clone(), make())
    model.test_cfg = ConfigDict(mode='whole', keep_logits=False)
    out = model.postprocess_result(logits.clone(), make())
    for r, o in zip(ref, out):
        assert 'seg_logits' not in o
        assert o.pred_sem_seg.data.shape == r.pred_sem_seg.data.shape
        assert torch.equal(o.pred_sem_seg.data, r.pred_sem_seg.data)
    assert (ref[0].pred_sem_seg.data == 1).any()  # the tied class is predicted somewhere
    assert not (ref[0].pred_sem_seg.data == 5).any()


def test_keep_logits_default_keeps_the_contract():
    model = _patch_text_model()
    logits = torch.randn(1, 7, 36, 52)
    metas = [dict(ori_shape=(60, 90), img_shape=(36, 52), pad_shape=(36, 52))]
    out = model.postprocess_result(logits, _samples_with(metas))[0]
    assert out.seg_logits.data.shape == (7, 60, 90)
    model.test_cfg = ConfigDict(mode='whole', keep_logits='no')
    with pytest.raises(ValueError, match='keep_logits'):
        model.postprocess_result(logits, _samples_with(metas))


@pytest.mark.slow
def test_san_prediction_only_slide_predict_equals_plain_path():
    """End to end on SAN: padded input, slide windows, resize to another original size."""
    model = _san_model()
    x = torch.randn(1, 3, 80, 112)
    meta = dict(ori_shape=(70, 130), img_shape=(72, 104), pad_shape=(80, 112),
                padding_size=[0, 8, 0, 8])
    _slide(model, (64, 64), (40, 40), batch_windows=1)
    with torch.no_grad():
        plain = model.predict(x, _samples_with([copy.deepcopy(meta)]))[0]
    _slide(model, (64, 64), (40, 40), batch_windows=8, keep_logits=False)
    with torch.no_grad():
        lean = model.predict(x, _samples_with([copy.deepcopy(meta)]))[0]
    assert 'seg_logits' not in lean and plain.seg_logits.data.shape == (8, 70, 130)
    same = (lean.pred_sem_seg.data == plain.pred_sem_seg.data).float().mean()
    # batched windows round differently: allow a near-tie pixel or two to flip
    assert same > 0.999, same


# ------------------------------------------------------------------ overlay
@pytest.mark.parametrize('shape', [(320, 400), (120, 90)])
def test_overlay_equals_mmseg_visualizer(shape):
    """draw_sem_seg == mmseg's SegLocalVisualizer picture (with_labels, via its canvas), the
    path OpenVocabInferencer.visualize used before; thin and thick text, an ignore index."""
    from mmseg.visualization import SegLocalVisualizer

    from mmseg_ovseg.apis.draw import draw_sem_seg, label_anchor
    from mmseg_ovseg.apis.inferencer import make_palette
    rng = torch.Generator().manual_seed(0)
    h, w = shape
    image = torch.randint(0, 256, (h, w, 3), generator=rng, dtype=torch.uint8).numpy()
    # blocky regions of 5 classes (one absent) and ignored pixels (255)
    coarse = torch.randint(0, 5, (h // 20 + 1, w // 30 + 1), generator=rng)
    labels = coarse.repeat_interleave(20, 0).repeat_interleave(30, 1)[:h, :w].clone()
    labels[labels == 3] = 6
    labels[:7, :11] = 255
    classes = ['sky', 'road', 'car', 'tree', 'person', 'dog', 'building with a long name']
    palette = make_palette(len(classes))
    sample = SegDataSample()
    sample.pred_sem_seg = PixelData(data=labels[None])
    vis = SegLocalVisualizer(name=f'test_overlay_{h}', alpha=0.4)
    vis.dataset_meta = dict(classes=classes, palette=palette)
    vis.add_datasample('p', image, sample, draw_gt=False, show=False, with_labels=True)
    ref = vis.get_image()
    out = draw_sem_seg(image, labels.numpy(), classes, palette, alpha=0.4)
    assert out.shape == ref.shape and out.dtype == ref.dtype
    assert (out != ref).sum() == 0
    for label in (0, 6):  # mmseg's own label position
        mask = labels.numpy() == label
        assert tuple(vis._get_center_loc(mask.astype(np.uint8))) == label_anchor(mask)


def test_overlay_of_a_single_pixel():
    from mmseg_ovseg.apis.draw import draw_sem_seg
    out = draw_sem_seg(np.full((1, 1, 3), 200, np.uint8), np.zeros((1, 1), np.int64),
                       ['a', 'b'], [[255, 0, 0], [0, 255, 0]], alpha=0.5)
    assert out.shape == (1, 1, 3) and out.dtype == np.uint8
