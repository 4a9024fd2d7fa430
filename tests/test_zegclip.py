"""ZegCLIP: relationship-descriptor head, non-exclusive loss, zero-shot protocol (label
mapping, seen-only training text, calibration, pseudo-labels), metric, converter, configs."""
import math
import os.path as osp

import numpy as np
import pytest
import torch
import torch.nn as nn
from mmengine.config import Config, ConfigDict
from mmengine.registry import init_default_scope
from mmengine.structures import PixelData

from mmseg.registry import METRICS, MODELS, TRANSFORMS
from mmseg.structures import SegDataSample

import mmseg_ovseg  # noqa: F401  (registers everything)
from mmseg_ovseg.datasets.zero_shot import PSEUDO_LABEL
from mmseg_ovseg.evaluation.zero_shot_metric import harmonic_iou
from tool_loader import load_tool

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
TINY_CLIP = dict(
    embed_dim=16,
    quick_gelu=False,
    vision_cfg=dict(image_size=32, layers=2, width=32, head_width=16, patch_size=8),
    text_cfg=dict(context_length=77, vocab_size=49408, width=16, heads=2, layers=1))
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


# ---------------------------------------------------------------- converter
def _converter():
    return load_tool('model_converters/zegclip2ovseg')


def _official_state(model):
    """A state dict in the official (mmseg 0.x) layout, built from the official module names:
    VPT backbone with shallow + deep prompt tensors, torch TransformerDecoderLayer-based decoder
    (with its unused self-attention), the loss criterion's buffer."""
    out = {}
    visual = model.backbone.visual.state_dict()
    for k, v in visual.items():
        out['backbone.' + k] = torch.randn_like(v)
    n, d = model.backbone.num_prompt_tokens, model.backbone.width
    out['backbone.prompt_embeddings'] = torch.randn(1, n, d)
    out['backbone.deep_prompt_embeddings'] = torch.randn(1, n, d)  # prompt_depth 2 = 1 + 1
    for k in ('prompt_proj.weight', 'prompt_proj.bias', 'prompt_norm.weight',
              'prompt_norm.bias'):
        out['backbone.' + k] = torch.randn_like(model.backbone.state_dict()[k])
    for k, v in model.text_encoder.state_dict().items():
        out['text_encoder.' + k] = torch.randn_like(v)
    dim = model.decode_head.in_channels
    out['decode_head.q_proj.weight'] = torch.randn(dim, 2 * dim)
    out['decode_head.q_proj.bias'] = torch.randn(dim)
    for i in range(len(model.decode_head.layers)):
        layer = nn.TransformerDecoderLayer(d_model=dim, nhead=2, dim_feedforward=32)
        del layer.multihead_attn
        layer.multihead_attn = nn.Module()
        for name in ('q', 'k', 'v', 'proj'):
            setattr(layer.multihead_attn, name, nn.Linear(dim, dim))
        for k, v in layer.state_dict().items():
            out[f'decode_head.decoder_1.layers.{i}.{k}'] = torch.randn_like(v)
    out['decode_head.loss_decode.criterion.empty_weight'] = torch.ones(4)
    return out


def test_converter_maps_official_layout_without_missing_or_unexpected(tmp_path):
    conv = _converter()
    model = _model()
    official = _official_state(model)
    assert any('self_attn' in k for k in official)
    path = tmp_path / 'official.pth'
    torch.save(dict(state_dict=official, meta=dict()), path)
    dst = tmp_path / 'out' / 'converted.pth'
    conv.main([str(path), str(dst)])
    state = torch.load(dst, weights_only=True)['state_dict']
    result = model.load_state_dict(state, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    torch.testing.assert_close(
        model.backbone.prompt_embeddings,
        torch.cat([official['backbone.prompt_embeddings'],
                   official['backbone.deep_prompt_embeddings']]))
    lay = model.decode_head.layers[1]
    pre = 'decode_head.decoder_1.layers.1.'
    assert torch.equal(lay.cross_attn.q_proj.weight, official[pre + 'multihead_attn.q.weight'])
    assert torch.equal(lay.cross_attn.out_proj.bias, official[pre + 'multihead_attn.proj.bias'])
    assert torch.equal(lay.norm1.weight, official[pre + 'norm2.weight'])
    assert torch.equal(lay.ffn[3].weight, official[pre + 'linear2.weight'])
    assert torch.equal(model.backbone.visual.proj, official['backbone.proj'])
    with pytest.raises(KeyError, match='not in the official'):
        conv.convert_zegclip({**official, 'backbone.foo': torch.zeros(1)})


# ---------------------------------------------------------------- configs
def _count(model):
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize('name,prompts', [('zegclip_vitb16_voc12-zs.py', 10),
                                          ('zegclip_vitb16_coco-stuff-zs.py', 100)])
def test_vitb16_configs_trainable_parameters(name, prompts):
    """The image tower and the head of the real configs (the frozen text tower adds nothing
    trainable; building it is left to the full-model check in the report)."""
    cfg = Config.fromfile(osp.join(REPO, 'configs', name))
    cfg.model.backbone.pretrained = None
    backbone = MODELS.build(cfg.model.backbone)
    head = MODELS.build(dict(cfg.model.decode_head, num_classes=20))
    assert backbone.prompt_embeddings.shape == (12, prompts, 768)
    # the official checkpoints' 32x32 (+ CLS) position table, so converted ones load as they are
    assert backbone.visual.positional_embedding.shape == (1 + 32 * 32, 768)
    trainable = _count(backbone) + _count(head)
    # official (README): 13.82M VOC / 14.65M COCO, which include 3 x (1,050,624 + 1,024)
    # parameters of decoder self-attention + norm1 that the official forward never uses.
    unused_official = 3 * (3 * 512 * 512 + 3 * 512 + 512 * 512 + 512 + 2 * 512)
    official = {10: 13.82e6, 100: 14.65e6}[prompts]
    assert abs(trainable + unused_official - official) < 0.005e6
    print(f'{name}: {trainable} trainable (+{unused_official} unused official = '
          f'{trainable + unused_official})')


@pytest.mark.parametrize('name', ['zegclip_vitb16_voc12-zs-st.py', 'zegclip_vitb16_voc12-fully.py',
                                  'zegclip_vitb16_coco-stuff-zs-st.py'])
def test_variant_configs(name):
    cfg = Config.fromfile(osp.join(REPO, 'configs', name))
    if 'st' in name.split('-')[-1]:
        assert cfg.model.self_training and cfg.model.seen_calibration == 0
        assert cfg.load_from and 'zs/iter_' in cfg.load_from
        pipes = [d.pipeline for d in cfg.train_dataloader.dataset.get('datasets', [])] or \
            [cfg.train_dataloader.dataset.pipeline]
        for pipe in pipes:
            assert dict(pipe[-2])['mode'] == 'transductive'
    else:
        assert cfg.model.zero_shot_split is None
        for d in cfg.train_dataloader.dataset.datasets:
            assert all(t['type'] != 'ZeroShotLabelMapping' for t in d.pipeline)
    assert cfg.val_evaluator.type == 'ZeroShotIoUMetric'


# ---------------------------------------------------------------- end to end
def test_tiny_config_short_train_and_zero_shot_eval(tmp_path):
    """The tiny config trains a few iterations through mmengine's Runner on seen classes and
    evaluates all classes with the zero-shot metric; its checkpoint feeds self-training."""
    from mmengine.runner import Runner

    from mmseg_ovseg.datasets.synthetic import generate_synthetic_dataset
    data_root = str(tmp_path / 'data')
    generate_synthetic_dataset(data_root, num_train=4, num_val=2, seed=0, size=64)

    def config(work_dir, max_iters=2):
        cfg = Config.fromfile(osp.join(REPO, 'configs', 'zegclip_tiny_synthetic-zs.py'))
        clip = cfg.clip_model
        clip.vision_cfg.update(image_size=64, layers=2, width=32, patch_size=16)
        clip.text_cfg.update(width=16, layers=1)
        clip.embed_dim = 16
        cfg.model.backbone.update(clip_model=clip, out_indices=(1, ), prompt_depth=2)
        cfg.model.text_encoder.clip_model = clip
        cfg.model.decode_head.update(in_channels=16, channels=16, num_heads=2,
                                     feedforward_channels=32)
        cfg.model.data_preprocessor.size = (64, 64)
        pipe = cfg.train_dataloader.dataset.pipeline
        pipe[2] = dict(type='RandomResize', scale=(64, 64), ratio_range=(1.0, 1.0),
                       keep_ratio=True)
        pipe[3] = dict(type='RandomCrop', crop_size=(64, 64))
        cfg.test_pipeline[1] = dict(type='Resize', scale=(64, 64), keep_ratio=True)
        for loader in (cfg.train_dataloader, cfg.val_dataloader):
            loader.update(num_workers=0, persistent_workers=False)
            loader.dataset.data_root = data_root
        cfg.val_dataloader.dataset.pipeline = cfg.test_pipeline
        cfg.train_dataloader.batch_size = 2
        cfg.test_dataloader = cfg.val_dataloader
        cfg.train_cfg.update(max_iters=max_iters, val_interval=max_iters)
        cfg.param_scheduler = [dict(type='PolyLR', power=0.9, begin=0, end=max_iters,
                                    by_epoch=False)]
        cfg.default_hooks.checkpoint.update(interval=max_iters)
        cfg.work_dir = work_dir
        return cfg

    runner = Runner.from_cfg(config(str(tmp_path / 'work')))
    runner.train()
    metrics = runner.val()
    assert set(metrics) >= {'pAcc', 'mIoU_seen', 'mIoU_unseen', 'hIoU'}
    assert 0 <= metrics['pAcc'] <= 100

    st = config(str(tmp_path / 'st'))
    st.model.update(self_training=True, seen_calibration=0.0)
    st.train_dataloader.dataset.pipeline[-2]['mode'] = 'transductive'
    st.load_from = str(tmp_path / 'work' / 'iter_2.pth')
    runner = Runner.from_cfg(st)
    runner.train()
    assert runner.model.self_training
