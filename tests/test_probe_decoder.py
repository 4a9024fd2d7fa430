"""tools/misc/probe_decoder.py: the figures are counts over the object patches, checked on logits
whose answer is known by construction; the logits are the decode head's own (the model's
inference is their bilinear resize); a run is loaded from its checkpoint, which must hold every
model tensor."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config, ConfigDict
from mmengine.registry import init_default_scope
from mmseg.registry import MODELS
from PIL import Image

import mmseg_ovseg  # noqa: F401
from mmseg_ovseg.datasets.concept_seg import CONCEPT_SEG_CLASSES
from test_zegclip import TINY_CLIP
from tool_loader import load_tool

probe = load_tool('misc/probe_decoder')
VOCAB = list(CONCEPT_SEG_CLASSES)
C = len(VOCAB)
IDX = {n: i for i, n in enumerate(VOCAB)}
PATCH = 8  # pixels per patch side in the constructed labels


def _gt():
    """32 x 32 labels on a 4 x 4 grid of 8 px patches: row 0 'red circle' (4 object patches),
    row 1 'house' (4), row 2 half 'blue star' / half background (tie: no object patch), row 3
    background except one patch 3/4 'green square' (+ 1/4 background: an object patch)."""
    gt = np.zeros((32, 32), np.int64)
    gt[0:8] = IDX['red circle']
    gt[8:16] = IDX['house']
    gt[16:20] = IDX['blue star']
    gt[24:32, 0:8] = IDX['green square']
    gt[24:26, 0:8] = 0
    return gt


def _patch_truth(gt):
    """Majority class per patch (4, 4) by hand."""
    return torch.tensor([[np.bincount(gt[r:r + PATCH, c:c + PATCH].ravel(), minlength=C).argmax()
                          for c in range(0, 32, PATCH)] for r in range(0, 32, PATCH)])


def _onehot_logits(cls):
    """Logits ``(C, 4, 4)``: 5 on ``cls[y, x]``, a distinct small value elsewhere."""
    torch.manual_seed(0)
    logits = torch.rand(C, 4, 4) - 1
    logits.scatter_(0, cls[None], 5.0)
    return logits


def test_object_patches_threshold_and_tie():
    gt = _gt()
    obj, cls = probe.object_patches(gt, C, (4, 4))
    expect = torch.zeros(4, 4, dtype=torch.bool)
    expect[0], expect[1], expect[3, 0] = True, True, True
    assert torch.equal(obj, expect)  # the 50 / 50 row is not an object patch
    assert torch.equal(cls[obj], _patch_truth(gt)[obj])
    assert int(cls[3, 0]) == IDX['green square']


def test_right_logits_give_100_percent_and_classes_predicted():
    gt = _gt()
    truth = _patch_truth(gt)
    acc = probe.DecoderProbe(VOCAB)
    logits = _onehot_logits(truth)
    acc.add(logits, logits, gt)
    r = acc.summary(VOCAB)
    assert r['object_patches'] == 9 and r['composition_patches'] == 5
    for k in ('called_object', 'identity_top1', 'colour_right', 'shape_right',
              'raw_clip_identity', 'colour_right_all', 'shape_right_all'):
        assert r[k] == 100.0, k
    present = {0, IDX['red circle'], IDX['house'], IDX['green square']}
    assert r['classes_predicted_patch'] == len(present)
    assert r['classes_predicted_pixel'] == len(present)
    assert set(r['never_predicted']) == set(VOCAB) - {VOCAB[c] for c in present}


def test_attribute_and_background_bookkeeping():
    gt = _gt()
    truth = _patch_truth(gt)
    pred = truth.clone()
    pred[0, :2] = IDX['red square']  # same colour, other shape
    pred[0, 2] = IDX['blue circle']  # same shape, other colour
    pred[0, 3] = IDX['house']  # a kind: neither colour nor shape of a composition
    pred[1, 0] = IDX['tree']  # another kind on a kind patch: wrong in the *_all figures
    logits = _onehot_logits(pred)
    bg_first = logits.clone()
    bg_first[0, 1] = 9.0  # background wins row 1 over all classes; 'house' stays top object
    raw = _onehot_logits(torch.zeros_like(truth) + IDX['fish'])  # raw CLIP: all 'fish'
    acc = probe.DecoderProbe(VOCAB)
    acc.add(bg_first, raw, gt)
    r = acc.summary(VOCAB)
    # 9 object patches: rows 0-1 and the green square; row 1 called background
    assert r['called_object'] == round(100 * 5 / 9, 1)
    assert r['identity_top1'] == round(100 * 4 / 9, 1)  # 3 houses + the green square
    # compositions: 4 red circles + green square; colour right on 2 red squares + green
    assert r['colour_right'] == round(100 * 3 / 5, 1)
    assert r['shape_right'] == round(100 * 2 / 5, 1)  # blue circle + green square
    # all objects: + 3 of 4 house patches right on both (the tree one wrong)
    assert r['colour_right_all'] == round(100 * 6 / 9, 1)
    assert r['shape_right_all'] == round(100 * 5 / 9, 1)
    assert r['raw_clip_identity'] == 0.0


def test_map_correlation_known_values():
    m = torch.randn(4, 4)
    assert probe.map_correlation(m.expand(C, 4, 4)) == pytest.approx(1.0)
    # pairs (m, m), (m, -m), (m, -m): (1 - 1 - 1) / 3; an affine map correlates exactly
    assert probe.map_correlation(torch.stack([m, 2 * m + 3, -m])) == pytest.approx(-1 / 3)
    # constant maps are left out, not NaN-poisoning the mean
    assert probe.map_correlation(torch.stack([m, m, torch.ones(4, 4)])) == pytest.approx(1.0)
    assert math.isnan(probe.map_correlation(torch.stack([m, torch.ones(4, 4)])))
    a, b = torch.randn(16), torch.randn(16)
    ref = float(np.corrcoef(a.numpy(), b.numpy())[0, 1])
    assert probe.map_correlation(torch.stack([a, b]).view(2, 4, 4)) == pytest.approx(ref)


def test_class_map_corr_averages_images_over_all_classes():
    gt = _gt()
    acc = probe.DecoderProbe(VOCAB)
    m = torch.randn(4, 4)
    acc.add(m.expand(C, 4, 4).clone(), m.expand(C, 4, 4).clone(), gt)
    signs = -torch.ones(C, 1, 1)
    signs[0] = 1  # background m, every object -m: its C - 1 pairs correlate at -1
    acc.add(signs * m, signs * m, gt)
    pairs = C * (C - 1) / 2
    second = (pairs - 2 * (C - 1)) / pairs
    r = acc.summary(VOCAB)
    assert r['class_map_corr'] == round((1 + second) / 2, 3)
    assert r['class_map_corr_objects'] == 1.0


def test_rejects_bad_shapes_and_vocabulary():
    acc = probe.DecoderProbe(VOCAB)
    with pytest.raises(ValueError, match=r'\(55, h, w\)'):
        acc.add(torch.zeros(54, 4, 4), torch.zeros(54, 4, 4), _gt())
    with pytest.raises(ValueError, match='cat'):
        probe.DecoderProbe(['background', 'cat'])


# ---------------------------------------------------------------- the model's own logits
def _zegclip_cfg():
    return dict(
        type='ZegCLIP', vocabulary='concepts', zero_shot_split='concepts',
        backbone=dict(
            type='CLIPVisionTransformer', clip_model=TINY_CLIP, frozen=True, out_indices=(1, ),
            output_dense=True, normalize_dense=True, num_prompt_tokens=3, prompt_depth=2),
        text_encoder=dict(type='OVCLIPTextEncoder', clip_model=TINY_CLIP),
        templates='single',
        decode_head=dict(
            type='ZegCLIPHead', in_channels=16, channels=16, num_layers=2, num_heads=2,
            feedforward_channels=32,
            loss_decode=[dict(type='NonExclusiveFocalLoss'), dict(type='NonExclusiveDiceLoss')]),
        test_cfg=dict(mode='whole'))


def _baseline_cfg():
    return dict(
        type='TextEncoderDecoder', vocabulary='concepts', templates='single',
        backbone=dict(type='CLIPVisionTransformer', clip_model=TINY_CLIP, frozen=True,
                      out_indices=(1, ), output_dense=True),
        text_encoder=dict(type='OVCLIPTextEncoder', clip_model=TINY_CLIP),
        decode_head=dict(type='PatchTextHead', in_channels=16, channels=16, proj_type='mlp',
                         loss_decode=dict(type='CrossEntropyLoss')),
        test_cfg=dict(mode='whole'))


def _build(cfg, seed=0):
    init_default_scope('mmseg')
    torch.manual_seed(seed)
    model = MODELS.build(ConfigDict(cfg))
    model.init_weights()
    return model.eval()


@pytest.mark.parametrize('make_cfg', [_zegclip_cfg, _baseline_cfg])
def test_patch_logits_are_the_heads_and_the_inference_resizes_them(make_cfg):
    model = _build(make_cfg())
    x = torch.randn(1, 3, 32, 32)
    meta = [dict(img_shape=(32, 32), ori_shape=(32, 32), pad_shape=(32, 32))]
    with torch.no_grad():
        logits, raw = probe.patch_logits(model, x)
        scores = model.encode_decode(x, meta)
        feats = model.backbone(x)
        text = model.class_embeddings
    assert logits.shape == raw.shape == (1, C, 4, 4)
    up = F.interpolate(logits, (32, 32), mode='bilinear', align_corners=False)
    if make_cfg is _zegclip_cfg:  # sigmoid minus the seen calibration, all 55 classes
        up = up.sigmoid() - model._seen_mask().float().view(1, -1, 1, 1) * 0.1
    torch.testing.assert_close(scores, up)
    dense = F.normalize(feats[-2], dim=1)
    torch.testing.assert_close(raw, torch.einsum('bdhw,cd->bchw', dense, text))


def _work_dir(tmp_path, model, cfg):
    run = tmp_path / 'run'
    run.mkdir()
    pre = dict(type='SegDataPreProcessor', mean=[120.0, 110.0, 100.0], std=[60.0, 50.0, 70.0],
               bgr_to_rgb=True)
    Config(dict(model=dict(cfg, data_preprocessor=pre), data_preprocessor=pre)).dump(
        str(run / 'run_config.py'))
    torch.save(dict(state_dict=model.state_dict()), run / 'iter_20.pth')
    data = tmp_path / 'data'
    rng = np.random.default_rng(0)
    for i in range(3):
        for sub in ('img_dir', 'ann_dir'):
            (data / sub / 'val').mkdir(parents=True, exist_ok=True)
        img = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
        Image.fromarray(img).save(data / 'img_dir' / 'val' / f'{i:06d}.png')
        Image.fromarray(np.roll(_gt(), 8 * i, 1).astype(np.uint8)).save(
            data / 'ann_dir' / 'val' / f'{i:06d}.png')
    return run, data, pre


def test_probe_loads_the_checkpoint_and_needs_every_tensor(tmp_path):
    cfg = _zegclip_cfg()
    model = _build(cfg, seed=3)
    run, data, pre = _work_dir(tmp_path, model, cfg)
    out = probe.probe(str(run), num=2, data_root=str(data))
    assert out['images'] == 2 and out['segmentor'] == 'ZegCLIP'
    assert out['checkpoint'].endswith('iter_20.pth')
    # the same figures from the saved model's own logits (the rebuilt model is not re-seeded)
    acc = probe.DecoderProbe(VOCAB)
    mean = torch.tensor(pre['mean']).view(3, 1, 1)
    std = torch.tensor(pre['std']).view(3, 1, 1)
    with torch.no_grad():
        for i in range(2):
            img = np.array(Image.open(data / 'img_dir' / 'val' / f'{i:06d}.png'))
            gt = np.array(Image.open(data / 'ann_dir' / 'val' / f'{i:06d}.png')).astype(np.int64)
            x = ((torch.from_numpy(img).permute(2, 0, 1).float() - mean) / std)[None]
            logits, raw = probe.patch_logits(model, x)
            acc.add(logits[0], raw[0], gt)
    ref = acc.summary(VOCAB)
    for k, v in ref.items():
        assert out[k] == v, k
    # a checkpoint without the text encoder would leave it at random values: refused
    state = {k: v for k, v in model.state_dict().items() if not k.startswith('text_encoder.')}
    torch.save(dict(state_dict=state), run / 'iter_30.pth')
    with pytest.raises(KeyError, match='text_encoder'):
        probe.probe(str(run), num=1, data_root=str(data))
