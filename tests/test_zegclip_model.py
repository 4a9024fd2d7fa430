"""ZegCLIP at tiny widths: relationship-descriptor head, non-exclusive loss, zero-shot protocol
(label mapping, seen-only training text, calibration, pseudo-labels), the softmax ablation and
the zero-shot metric (split from test_zegclip.py; tests unchanged)."""
import math

import numpy as np
import pytest
import torch
from mmengine.config import ConfigDict
from mmengine.registry import init_default_scope
from mmengine.structures import PixelData
from mmseg.registry import METRICS, MODELS, TRANSFORMS
from mmseg.structures import SegDataSample

import mmseg_ovseg  # noqa: F401  (registers everything)
from mmseg_ovseg.datasets.zero_shot import PSEUDO_LABEL
from mmseg_ovseg.evaluation.zero_shot_metric import harmonic_iou
from test_zegclip import TINY_CLIP

VOCAB = ['cat', 'dog', 'car', 'tree', 'sky']
SPLIT = dict(unseen=[1, 3])  # dog, tree


def _model(**kwargs):
    init_default_scope('mmseg')
    cfg = dict(
        type='ZegCLIP',
        vocabulary=VOCAB,
        zero_shot_split=SPLIT,
        data_preprocessor=dict(type='SegDataPreProcessor', mean=[0, 0, 0], std=[1, 1, 1]),
        backbone=dict(
            type='CLIPVisionTransformer', clip_model=TINY_CLIP, frozen=True, out_indices=(1, ),
            output_dense=True, normalize_dense=True, num_prompt_tokens=3, prompt_depth=2,
            prompt_dropout=0.1),
        text_encoder=dict(type='OVCLIPTextEncoder', clip_model=TINY_CLIP, templates='single'),
        decode_head=dict(
            type='ZegCLIPHead', in_channels=16, channels=16, num_layers=2, num_heads=2,
            feedforward_channels=32,
            loss_decode=[dict(type='NonExclusiveFocalLoss'),
                         dict(type='NonExclusiveDiceLoss')]),
        test_cfg=dict(mode='whole'))
    cfg.update(kwargs)
    model = MODELS.build(ConfigDict(cfg))
    model.init_weights()
    return model


def _sample(label: np.ndarray) -> SegDataSample:
    s = SegDataSample()
    s.gt_sem_seg = PixelData(data=torch.as_tensor(label, dtype=torch.long)[None])
    h, w = label.shape
    s.set_metainfo(dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w)))
    return s


# ---------------------------------------------------------------- head
def test_rd_query_matches_hand_computation():
    head = _model().decode_head
    text = torch.randn(3, 16)
    g = torch.randn(2, 16)
    q = head.relationship_queries(text, g)
    w, b = head.query_proj.weight, head.query_proj.bias
    for i in range(2):
        for c in range(3):
            feat = torch.tensor([text[c, d].item() * g[i, d].item() for d in range(16)] +
                                text[c].tolist())
            torch.testing.assert_close(q[i, c], w @ feat + b, rtol=1e-5, atol=1e-5)
    head_t = _model(decode_head=dict(
        type='ZegCLIPHead', in_channels=16, channels=16, num_layers=1, num_heads=2,
        query_type='text')).decode_head
    assert head_t.query_proj is None
    assert torch.equal(head_t.relationship_queries(text, g), text.expand(2, -1, -1))


def test_mask_is_last_layer_head_averaged_attention_logits():
    head = _model().decode_head.eval()
    dense = torch.nn.functional.normalize(torch.randn(2, 16, 3, 4), dim=1)
    g = torch.nn.functional.normalize(torch.randn(2, 16), dim=1)
    text = torch.nn.functional.normalize(torch.randn(5, 16), dim=1)
    out = head(dict(feats=(dense, g), class_embeds=text))
    assert out.shape == (2, 5, 3, 4)
    # by hand: queries through layer 0, then the last layer's q.k / sqrt(d_head), head mean
    memory = dense.flatten(2).transpose(1, 2)
    q = head.relationship_queries(text, g)
    q, _ = head.layers[0](q, memory)
    attn = head.layers[1].cross_attn
    qq, kk = attn.q_proj(q), attn.k_proj(memory)
    expected = torch.zeros(2, 5, 12)
    for h in range(2):
        sl = slice(8 * h, 8 * (h + 1))
        expected += qq[..., sl] @ kk[..., sl].transpose(1, 2) / math.sqrt(8) / 2
    torch.testing.assert_close(out, expected.reshape(2, 5, 3, 4), rtol=1e-4, atol=1e-5)


def test_head_rejects_bad_inputs():
    head = _model().decode_head
    g, text = torch.randn(1, 16), torch.randn(5, 16)
    with pytest.raises(ValueError, match='dense embeddings'):
        head(dict(feats=(torch.randn(1, 8, 2, 2), g), class_embeds=text))
    with pytest.raises(ValueError, match='class_embeds'):
        head(dict(feats=(torch.randn(1, 16, 2, 2), g), class_embeds=torch.randn(5, 8)))
    with pytest.raises(ValueError, match='channels'):
        MODELS.build(dict(type='ZegCLIPHead', in_channels=16, channels=8, num_classes=2))


# ---------------------------------------------------------------- loss
def _direct_losses(pred, label, ignore=255, alpha=0.25, gamma=2.0):
    """Focal / dice of ZegCLIP written out element by element."""
    b, c, h, w = pred.shape
    focal_sum, dice_sum, num_masks = 0.0, 0.0, 0
    for i in range(b):
        present = {int(v) for v in label[i].flatten() if int(v) != ignore}
        num_masks += len(present)
        for k in range(c):
            terms, inter, psum, tsum = [], 0.0, 0.0, 0.0
            for y in range(h):
                for x in range(w):
                    t = 1.0 if int(label[i, y, x]) == k else 0.0  # ignore -> negative
                    p = 1 / (1 + math.exp(-float(pred[i, k, y, x])))
                    ce = -(t * math.log(p) + (1 - t) * math.log(1 - p))
                    pt = p * t + (1 - p) * (1 - t)
                    at = alpha * t + (1 - alpha) * (1 - t)
                    terms.append(at * (1 - pt)**gamma * ce)
                    inter, psum, tsum = inter + p * t, psum + p, tsum + t
            focal_sum += sum(terms) / len(terms)
            if k in present:
                dice_sum += 1 - (2 * inter + 1) / (psum + tsum + 1)
    n = max(num_masks, 1)
    return focal_sum / n, dice_sum / n


def test_non_exclusive_losses_match_direct_formula_with_ignore():
    torch.manual_seed(0)
    pred = torch.randn(2, 3, 3, 4, dtype=torch.float64)
    label = torch.tensor([[[0, 0, 255, 1], [0, 2, 2, 255], [1, 1, 1, 1]],
                          [[2, 2, 2, 2], [255, 255, 2, 2], [2, 2, 2, 2]]])
    focal = MODELS.build(dict(type='NonExclusiveFocalLoss', loss_weight=100.0))
    dice = MODELS.build(dict(type='NonExclusiveDiceLoss', loss_weight=1.0))
    exp_focal, exp_dice = _direct_losses(pred, label)
    assert focal.loss_name == 'loss_focal' and dice.loss_name == 'loss_dice'
    assert math.isclose(focal(pred, label, ignore_index=255).item(), 100 * exp_focal,
                        rel_tol=1e-5)
    assert math.isclose(dice(pred, label, ignore_index=255).item(), exp_dice, rel_tol=1e-5)
    # an all-ignore batch still has a (focal) loss: every class is negative everywhere
    all_ignored = torch.full_like(label, 255)
    assert focal(pred, all_ignored).item() > 0 and dice(pred, all_ignored).item() == 0
    with pytest.raises(ValueError, match='outside'):
        focal(pred, torch.full_like(label, PSEUDO_LABEL))
    with pytest.raises(ValueError, match='outside'):
        dice(pred, torch.full_like(label, 3))


# ---------------------------------------------------------------- label mapping
def test_zero_shot_label_mapping():
    seg = np.array([[0, 1, 2], [3, 4, 255], [200, 4, 0]], dtype=np.uint8)
    ind = TRANSFORMS.build(dict(type='ZeroShotLabelMapping', split=SPLIT, num_classes=5))
    out = ind(dict(gt_seg_map=seg.copy()))['gt_seg_map']
    # seen 0, 2, 4 -> 0, 1, 2; unseen 1, 3 and unknown 200 -> 255
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, [[0, 255, 1], [255, 2, 255], [255, 2, 0]])
    tra = TRANSFORMS.build(dict(type='ZeroShotLabelMapping', split=SPLIT, num_classes=5,
                                mode='transductive'))
    out = tra(dict(gt_seg_map=seg.copy()))['gt_seg_map']
    np.testing.assert_array_equal(out, [[0, -1, 2], [-1, 4, 255], [255, 4, 0]])
    voc = TRANSFORMS.build(dict(type='ZeroShotLabelMapping', split='voc20'))
    assert voc.unseen_idx == [15, 16, 17, 18, 19]
    with pytest.raises(ValueError, match='mode'):
        TRANSFORMS.build(dict(type='ZeroShotLabelMapping', split='voc20', mode='x'))
    with pytest.raises(KeyError, match='gt_seg_map'):
        voc(dict(img=np.zeros((2, 2, 3))))


# ---------------------------------------------------------------- segmentor protocol
def test_frozen_and_trainable_sets():
    model = _model()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert {n for n in trainable if not n.startswith('decode_head.')} == {
        'backbone.prompt_embeddings', 'backbone.prompt_proj.weight', 'backbone.prompt_proj.bias',
        'backbone.prompt_norm.weight', 'backbone.prompt_norm.bias'}
    assert all(p.requires_grad for n, p in model.named_parameters()
               if n.startswith('decode_head.'))
    assert not any(n.startswith(('text_encoder.', 'backbone.visual.')) for n in trainable)


@pytest.mark.slow
def test_inductive_training_uses_seen_text_and_test_calibrates_seen_scores():
    model = _model()
    model.train()
    assert model.class_embeddings.shape == (3, 16)  # cat, car, sky
    full = model.text_encoder.encode(VOCAB, None)
    torch.testing.assert_close(model.class_embeddings, full[[0, 2, 4]])
    img = torch.randn(2, 3, 32, 32)
    samples = [_sample(np.random.randint(0, 3, (32, 32))) for _ in range(2)]
    losses = model.loss(img, samples)
    assert set(losses) >= {'decode.loss_focal', 'decode.loss_dice', 'decode.acc_seg'}
    sum(v for k, v in losses.items() if 'loss' in k).backward()
    assert model.backbone.prompt_embeddings.grad.abs().sum() > 0

    model.eval()
    assert model.class_embeddings.shape == (5, 16)
    metas = [s.metainfo for s in samples]
    with torch.no_grad():
        raw = model.decode_head.predict(model.extract_feat(img), metas, model.test_cfg)
        scores = model.encode_decode(img, metas)
    offset = torch.tensor([0.1, 0, 0.1, 0, 0.1]).view(1, 5, 1, 1)
    torch.testing.assert_close(scores, raw.sigmoid() - offset)
    preds = model.predict(img, samples)
    assert preds[0].pred_sem_seg.data.shape == (1, 32, 32)
    # calibration follows the vocabulary by name
    model.set_vocabulary(['sky', 'dog'])
    with torch.no_grad():
        raw = model.decode_head.predict(model.extract_feat(img), metas, model.test_cfg)
        torch.testing.assert_close(model.encode_decode(img, metas),
                                   raw.sigmoid() - torch.tensor([0.1, 0]).view(1, 2, 1, 1))


def test_self_training_pseudo_labels_only_marked_pixels_with_unseen_argmax():
    model = _model(self_training=True, seen_calibration=0.0)
    model.train()
    assert model.class_embeddings.shape == (5, 16)
    label = np.full((4, 4), 255)
    label[0] = [0, 2, 4, 0]
    label[1:3] = PSEUDO_LABEL
    logits = torch.randn(1, 5, 4, 4)
    out = model.pseudo_label(logits, [_sample(label)])[0].gt_sem_seg.data[0]
    unseen = torch.tensor([1, 3])
    expected = unseen[logits[0, [1, 3]].argmax(0)]
    assert torch.equal(out[1:3], expected[1:3])
    assert torch.equal(out[0], torch.tensor([0, 2, 4, 0])) and (out[3] == 255).all()
    img = torch.randn(1, 3, 32, 32)
    big = np.full((32, 32), PSEUDO_LABEL)
    big[:8] = 2
    losses = model.loss(img, [_sample(big)])
    assert torch.isfinite(losses['decode.loss_focal'])
    with pytest.raises(ValueError, match='zero_shot_split'):
        _model(zero_shot_split=None, self_training=True)


@pytest.mark.slow
def test_softmax_cross_entropy_ablation():
    model = _model(score_act='softmax', seen_calibration=0.0, decode_head=dict(
        type='ZegCLIPHead', in_channels=16, channels=16, num_layers=2, num_heads=2,
        feedforward_channels=32, loss_decode=dict(type='CrossEntropyLoss')))
    img = torch.randn(1, 3, 32, 32)
    losses = model.loss(img, [_sample(np.random.randint(0, 3, (32, 32)))])
    assert torch.isfinite(losses['decode.loss_ce'])
    model.eval()
    meta = [dict(img_shape=(32, 32), pad_shape=(32, 32))]
    with torch.no_grad():
        scores = model.encode_decode(img, meta)
    torch.testing.assert_close(scores.sum(1), torch.ones(1, 32, 32))
    with pytest.raises(ValueError, match='score_act'):
        _model(score_act='relu')


# ---------------------------------------------------------------- metric
def test_zero_shot_metric_known_values():
    metric = METRICS.build(dict(type='ZeroShotIoUMetric', split=dict(unseen=[2, 3])))
    metric.dataset_meta = dict(classes=['a', 'b', 'c', 'd'])
    gt = torch.tensor([[0, 0, 1, 1], [2, 2, 3, 3], [255, 0, 1, 2]])
    pred = torch.tensor([[0, 0, 1, 0], [2, 3, 3, 3], [1, 0, 1, 1]])
    metric.process({}, [dict(pred_sem_seg=dict(data=pred), gt_sem_seg=dict(data=gt))])
    res = metric.compute_metrics(metric.results)
    # IoU: a 3/4, b 2/4, c 1/3, d 2/3 ; pAcc 8/11
    s, u = (3 / 4 + 2 / 4) / 2, (1 / 3 + 2 / 3) / 2
    assert res['pAcc'] == round(800 / 11, 2)
    assert res['mIoU_seen'] == round(100 * s, 2) and res['mIoU_unseen'] == round(100 * u, 2)
    assert res['hIoU'] == round(100 * 2 * s * u / (s + u), 2)
    assert res['mIoU'] == round(100 * (s + u) / 2, 2)
    assert harmonic_iou(0.0, 0.0) == 0.0 and math.isnan(harmonic_iou(float('nan'), 1.0))
    bad = METRICS.build(dict(type='ZeroShotIoUMetric', split=dict(unseen=[])))
    bad.dataset_meta = metric.dataset_meta
    with pytest.raises(ValueError):
        bad.compute_metrics(metric.results)
