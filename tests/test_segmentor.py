import copy

import pytest
import torch
from mmengine.config import ConfigDict
from mmengine.registry import init_default_scope
from mmengine.structures import PixelData
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample

import mmseg_ovseg  # noqa: F401  (registers the plugin's modules)
from mmseg_ovseg.clip.vocabularies import SYNTHETIC_CLASSES

CLIP = dict(
    embed_dim=32,
    vision_cfg=dict(image_size=64, layers=2, width=64, head_width=32, patch_size=16),
    text_cfg=dict(context_length=77, vocab_size=49408, width=32, heads=2, layers=1))


def tiny_cfg(**overrides):
    cfg = dict(
        type='TextEncoderDecoder',
        data_preprocessor=dict(type='SegDataPreProcessor', mean=[123.7, 116.3, 103.5],
                               std=[58.4, 57.1, 57.4]),
        vocabulary='synthetic',
        templates='single',
        backbone=dict(type='CLIPVisionTransformer', clip_model=CLIP, out_indices=(1, ),
                      frozen=False, output_dense=True),
        text_encoder=dict(type='OVCLIPTextEncoder', clip_model=CLIP, templates='single'),
        decode_head=dict(type='PatchTextHead', in_channels=32, channels=32, proj_type='mlp',
                         dropout_ratio=0.0),
        test_cfg=dict(mode='whole'))
    cfg.update(overrides)
    return cfg


@pytest.fixture
def model():
    init_default_scope('mmseg')
    torch.manual_seed(0)
    return MODELS.build(tiny_cfg())


def _samples(n, h, w, num_classes=len(SYNTHETIC_CLASSES)):
    out = []
    for _ in range(n):
        s = SegDataSample(metainfo=dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w)))
        s.gt_sem_seg = PixelData(data=torch.randint(0, num_classes, (1, h, w)))
        out.append(s)
    return out


def test_builds_with_vocabulary_size(model):
    n = len(SYNTHETIC_CLASSES)
    assert model.vocabulary == list(SYNTHETIC_CLASSES)
    assert model.num_classes == model.out_channels == n
    assert model.decode_head.num_classes == model.decode_head.out_channels == n
    # text tower is frozen, keys follow the CLIP checkpoint layout
    assert not any(p.requires_grad for p in model.text_encoder.parameters())
    keys = model.state_dict().keys()
    assert any(k.startswith('backbone.visual.') for k in keys)
    assert any(k.startswith('text_encoder.') for k in keys)
    feats = model.extract_feat(torch.randn(1, 3, 64, 64))
    assert set(feats) == {'inputs', 'feats', 'class_embeds'}
    emb = feats['class_embeds']
    assert emb.shape == (n, 32)
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(n))


def test_missing_vocabulary_is_a_clear_error():
    init_default_scope('mmseg')
    with pytest.raises(ValueError, match='vocabulary'):
        MODELS.build(tiny_cfg(vocabulary=None))


def test_loss_finite_and_grads_only_in_trainable_params(model):
    model.train()
    losses = model.loss(torch.randn(2, 3, 64, 64), _samples(2, 64, 64))
    assert set(losses) >= {'decode.loss_ce', 'decode.acc_seg'}
    loss = losses['decode.loss_ce']
    assert torch.isfinite(loss) and loss > 0
    loss.backward()
    for name, p in model.named_parameters():
        if name.startswith('text_encoder.'):
            assert p.grad is None, name
    head_grads = [p.grad for p in model.decode_head.parameters()]
    assert all(g is not None and g.abs().sum() > 0 for g in head_grads)
    assert model.decode_head.logit_scale.grad is not None
    assert model.backbone.visual.conv1.weight.grad.abs().sum() > 0


def test_loss_with_auxiliary_head():
    init_default_scope('mmseg')
    aux = dict(type='PatchTextHead', in_channels=32, channels=32, proj_type='conv',
               dropout_ratio=0.0, loss_decode=dict(type='CrossEntropyLoss', loss_weight=0.4))
    m = MODELS.build(tiny_cfg(auxiliary_head=aux))
    assert m.auxiliary_head.num_classes == len(SYNTHETIC_CLASSES)
    losses = m.loss(torch.randn(1, 3, 64, 64), _samples(1, 64, 64))
    assert torch.isfinite(losses['aux.loss_ce'])


def test_predict_without_and_with_data_samples(model):
    model.eval()
    n = len(SYNTHETIC_CLASSES)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        out = model.predict(x)
        logits = model._forward(x)
    assert len(out) == 2
    assert out[0].seg_logits.data.shape == (n, 64, 64)
    assert out[0].pred_sem_seg.data.shape == (1, 64, 64)
    assert logits.shape == (2, n, 4, 4)  # 64 / patch 16
    # with metas: padding removed, then resized to the original image size
    samples = [SegDataSample(metainfo=dict(img_shape=(64, 48), ori_shape=(128, 96),
                                           pad_shape=(64, 64), padding_size=[0, 16, 0, 0]))
               for _ in range(2)]
    with torch.no_grad():
        out = model.predict(x, samples)
    assert out[1].seg_logits.data.shape == (n, 128, 96)
    assert out[1].pred_sem_seg.data.shape == (1, 128, 96)
    assert int(out[1].pred_sem_seg.data.max()) < n


@pytest.mark.slow
def test_whole_and_slide_inference(model):
    model.eval()
    n = len(SYNTHETIC_CLASSES)
    x = torch.randn(1, 3, 96, 128)
    metas = [dict(img_shape=(96, 128), ori_shape=(96, 128), pad_shape=(96, 128))]
    with torch.no_grad():
        whole = model.inference(x, copy.deepcopy(metas))
        model.test_cfg = ConfigDict(mode='slide', crop_size=(64, 64), stride=(32, 32))
        slide = model.inference(x, copy.deepcopy(metas))
        # a crop equal to the image makes slide inference equal to whole inference
        model.test_cfg = ConfigDict(mode='slide', crop_size=(96, 128), stride=(64, 64))
        single = model.inference(x, copy.deepcopy(metas))
    assert whole.shape == slide.shape == (1, n, 96, 128)
    assert torch.isfinite(slide).all()
    torch.testing.assert_close(single, whole)


@pytest.mark.slow
def test_set_vocabulary_changes_outputs_and_caches_text(model):
    model.eval()
    runs = []
    model.text_encoder.token_embedding.register_forward_hook(lambda *a: runs.append(1))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        model.predict(x)
        first = len(runs)
        assert first > 0
        model.predict(x)
        model._forward(x)
        assert len(runs) == first  # cached: the text tower ran once for this vocabulary

        model.set_vocabulary(['sky', 'red circle', 'dog'])
        assert model.num_classes == model.out_channels == 3
        assert model.decode_head.num_classes == model.decode_head.out_channels == 3
        out = model.predict(x)
        assert out[0].seg_logits.data.shape == (3, 64, 64)
        assert model._forward(x).shape == (1, 3, 4, 4)
        second = len(runs)
        assert second > first
        model.predict(x)
        assert len(runs) == second

        # back to the first vocabulary: embeddings are reused, logits identical
        model.set_vocabulary('synthetic')
        a = model._forward(x)
        assert len(runs) == second
        assert a.shape[1] == len(SYNTHETIC_CLASSES)
        # the shared class 'red circle' gets the same logit in both vocabularies
        model.set_vocabulary(['sky', 'red circle', 'dog'])
        b = model._forward(x)
        torch.testing.assert_close(b[:, 1], a[:, 1])


def test_one_text_cache_resolves_once_and_follows_the_weights(model):
    """The segmentor resolves the specs when set and owns the embedding cache: keyed by
    vocabulary, templates and inference mode, dropped when a text-encoder tensor changes."""
    from mmseg_ovseg.clip.templates import get_templates
    model.eval()
    assert model.templates == get_templates('single')
    model.set_vocabulary('cat, dog', templates='vild')
    assert model.vocabulary == ['cat', 'dog'] and model.templates == get_templates('vild')
    runs = []
    model.text_encoder.token_embedding.register_forward_hook(lambda *a: runs.append(1))
    first = model.class_embeddings
    assert model.class_embeddings is first and len(runs) == 1
    # the value is the encoder's template ensemble of the resolved names and templates
    torch.testing.assert_close(first, model.text_encoder.embed(['cat', 'dog'],
                                                               get_templates('vild')))
    assert len(runs) == 2
    model.templates = 'single'  # another key: computed, the first kept
    assert model.class_embeddings is not first and len(runs) == 3
    model.templates = 'vild'
    assert model.class_embeddings is first and len(runs) == 3
    with torch.inference_mode():
        assert model.class_embeddings.is_inference() and len(runs) == 4
    assert not model.class_embeddings.is_inference()
    # loading weights (in place: the tensors' versions change) invalidates every entry
    state = {k: v + 0.01 for k, v in model.text_encoder.state_dict().items()
             if v.is_floating_point()}
    model.text_encoder.load_state_dict(state, strict=False)
    second = model.class_embeddings
    assert len(runs) == 5 and not torch.allclose(second, first)
    model.train()  # a frozen encoder keeps caching in training
    assert model.class_embeddings is second and len(runs) == 5


@pytest.mark.parametrize('meta', [
    dict(ori_shape=(32, 32), img_shape=(32, 32), padding_size=[0, 0, 0, 0]),  # shortcut
    dict(ori_shape=(32, 32), img_shape=(32, 32), padding_size=[0, 0, 0, 0], flip=True,
         flip_direction='horizontal'),  # mmseg's path
    dict(ori_shape=(20, 28), img_shape=(20, 28), padding_size=[0, 4, 0, 12]),
])
def test_postprocess_equals_mmseg(model, meta):
    """The same-size shortcut of postprocess_result gives exactly mmseg's result."""
    from mmseg.models.segmentors import EncoderDecoder
    logits = torch.randn(1, len(SYNTHETIC_CLASSES), 32, 32)
    ours = model.postprocess_result(logits.clone(), [SegDataSample(metainfo=dict(meta))])[0]
    ref = EncoderDecoder.postprocess_result(model, logits.clone(),
                                            [SegDataSample(metainfo=dict(meta))])[0]
    assert torch.equal(ours.seg_logits.data, ref.seg_logits.data)
    assert torch.equal(ours.pred_sem_seg.data, ref.pred_sem_seg.data)


def test_templates_are_set_on_the_segmentor_only():
    """Configs name the templates once, on the segmentor: they become the encoder's default
    (its standalone ``encode`` prompts the same way); an encoder without template ensembling
    (learned context) rejects them with an error naming the encoder."""
    from mmseg_ovseg.clip.templates import get_templates
    init_default_scope('mmseg')
    cfg = tiny_cfg(templates='vild')
    cfg['text_encoder'] = dict(type='OVCLIPTextEncoder', clip_model=CLIP)
    cfg['text_encoder']['templates'] = 'single'  # what the segmentor must override
    model = MODELS.build(cfg)
    assert model.templates == model.text_encoder.templates == get_templates('vild')
    model.set_vocabulary('cat, dog', templates='single')
    assert model.text_encoder.templates == get_templates('single')
    torch.testing.assert_close(model.text_encoder.encode(['cat', 'dog']),
                               model.text_encoder.embed(['cat', 'dog'], get_templates('single')))
    # no spec: the encoder's own default is the segmentor's
    del cfg['templates']
    cfg['text_encoder']['templates'] = 'vild'
    assert MODELS.build(cfg).templates == get_templates('vild')
    # a learned-context encoder has no templates to set
    model.text_encoder.templates = None
    with pytest.raises(ValueError, match='OVCLIPTextEncoder does not ensemble'):
        model.templates = 'vild'
