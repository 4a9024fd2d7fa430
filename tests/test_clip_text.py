"""CLIP tokenizer and text encoders (mmseg_ovseg.clip): parity with open_clip, template
ensembling, caches, freezing, learnable context, strict loading."""
import logging
import os

import open_clip
import pytest
import torch
import torch.nn.functional as F
from mmengine.logging import MMLogger

from mmseg_ovseg.clip import create_clip, select_tower_state
from mmseg_ovseg.clip.text_encoder import ContextCLIPTextEncoder, OVCLIPTextEncoder
from mmseg_ovseg.clip.tokenizer import tokenize


def initialized(module):
    """``module`` after ``init_weights()``: CLIP towers read ``pretrained`` there
    (mmengine's convention), not at construction."""
    module.init_weights()
    return module


def tiny_cfg(width=32):
    return dict(
        embed_dim=16, quick_gelu=True,
        vision_cfg=dict(image_size=32, layers=1, width=32, head_width=16, patch_size=16),
        text_cfg=dict(context_length=77, vocab_size=49408, width=width, heads=2, layers=2))


VOCAB = ['cat', 'dog', 'traffic light']


@pytest.fixture(scope='module')
def clip():
    torch.manual_seed(0)
    return create_clip(tiny_cfg()).eval()


@pytest.fixture(scope='module')
def ckpt(clip, tmp_path_factory):
    path = tmp_path_factory.mktemp('ckpt') / 'tiny_clip.pt'
    torch.save(clip.state_dict(), path)
    return str(path)


def count_calls(module):
    calls = []
    module.register_forward_hook(lambda *args: calls.append(1))
    return calls


def direct_embeddings(clip, vocabulary, templates):
    """Template ensembling computed the plain way with open_clip, one template at a time."""
    per_template = []
    with torch.no_grad():
        for t in templates:
            tokens = open_clip.tokenize([t.format(c) for c in vocabulary])
            per_template.append(F.normalize(clip.encode_text(tokens), dim=-1))
    return F.normalize(torch.stack(per_template).mean(0), dim=-1)


def test_tokenize_shape_and_eot():
    tokens = tokenize(['a photo of a cat.', 'dog'])
    assert tokens.shape == (2, 77) and tokens.dtype == torch.long
    assert torch.equal(tokens, open_clip.tokenize(['a photo of a cat.', 'dog']))
    assert (tokens[:, 0] == 49406).all()
    assert tokens[1, :3].tolist() == [49406, tokens[1, 1].item(), 49407]
    assert tokenize('dog').shape == (1, 77)
    long = tokenize(['word ' * 100], context_length=8)
    assert long.shape == (1, 8)
    assert long[0, -1].item() == 49407 and long[0].argmax().item() == 7
    assert (long[0, 1:7] == long[0, 1]).all()
    with pytest.raises(ValueError, match='context_length'):
        tokenize('a', context_length=1)


def test_encode_text_parity(clip, ckpt):
    enc = initialized(OVCLIPTextEncoder(tiny_cfg(), pretrained=ckpt))
    assert set(enc.state_dict()) == set(select_tower_state(clip.state_dict(), 'text'))
    tokens = tokenize(['a photo of a cat.', 'there is a red car in the scene', 'x'])
    with torch.no_grad():
        ours, ref = enc.encode_text(tokens), clip.encode_text(tokens)
    assert ours.shape == (3, 16) and enc.embed_dims == 16
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize('templates', ['vild', 'single', ['{} here.', 'a sketch of {}']])
def test_template_ensemble_equals_direct(clip, ckpt, templates):
    default = ['a {}', 'the {}.']
    enc = initialized(OVCLIPTextEncoder(tiny_cfg(), pretrained=ckpt, templates=default,
                                        chunk_size=7))
    from mmseg_ovseg.clip.templates import get_templates
    out = enc.encode(VOCAB, templates)
    ref = direct_embeddings(clip, VOCAB, get_templates(templates))
    assert out.shape == (3, 16) and not out.requires_grad
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(3))
    # forward == encode; default templates come from the constructor
    torch.testing.assert_close(
        enc(VOCAB), direct_embeddings(clip, VOCAB, default),
        atol=1e-5, rtol=1e-5)


@pytest.mark.slow
def test_memory_cache_and_invalidation(clip, ckpt):
    enc = initialized(OVCLIPTextEncoder(tiny_cfg(), pretrained=ckpt, templates='single'))
    calls = count_calls(enc.transformer)
    logger, records = MMLogger.get_current_instance(), []
    handler = logging.Handler()
    handler.emit = records.append
    logger.addHandler(handler)
    try:
        first = enc.encode(VOCAB)
    finally:
        logger.removeHandler(handler)
    assert len(calls) == 1
    assert any('encoded 3 classes x 1 templates' in r.getMessage() for r in records)
    second = enc.encode(list(VOCAB))
    assert len(calls) == 1 and torch.equal(first, second)
    enc.encode(VOCAB, templates='vild')  # other key -> tower runs
    assert len(calls) == 2
    enc.encode(VOCAB[:2])
    assert len(calls) == 3
    # Loading weights (here: perturbed ones) clears the cache.
    state = {k: v + 0.01 * torch.randn_like(v) if v.is_floating_point() else v
             for k, v in enc.state_dict().items()}
    enc.load_state_dict(state)
    third = enc.encode(VOCAB)
    assert len(calls) == 4
    assert not torch.allclose(first, third, atol=1e-4)


@pytest.mark.slow
def test_disk_cache_round_trip(clip, ckpt, tmp_path):
    cache_dir = tmp_path / 'cache'
    enc = initialized(OVCLIPTextEncoder(tiny_cfg(), pretrained=ckpt, templates='vild',
                                        cache_dir=str(cache_dir)))
    first = enc.encode(VOCAB)
    files = os.listdir(cache_dir)
    assert len(files) == 1 and files[0].endswith('.pt')  # no leftover temporary file
    # A fresh encoder with the same weights reads the file instead of running the tower.
    enc2 = initialized(OVCLIPTextEncoder(tiny_cfg(), pretrained=ckpt, templates='vild',
                                         cache_dir=str(cache_dir)))
    calls = count_calls(enc2.transformer)
    torch.testing.assert_close(enc2.encode(VOCAB), first, atol=0, rtol=0)
    assert len(calls) == 0
    # Other weights -> other digest -> no stale hit.
    enc3 = OVCLIPTextEncoder(tiny_cfg(), templates='vild', cache_dir=str(cache_dir))
    calls3 = count_calls(enc3.transformer)
    enc3.encode(VOCAB)
    assert len(calls3) == 1 and len(os.listdir(cache_dir)) == 2
    assert enc3.weights_digest() != enc.weights_digest()
    # A corrupt cache file is ignored and rewritten.
    path = os.path.join(cache_dir, files[0])
    with open(path, 'wb') as f:
        f.write(b'garbage')
    enc4 = initialized(OVCLIPTextEncoder(tiny_cfg(), pretrained=ckpt, templates='vild',
                                         cache_dir=str(cache_dir)))
    torch.testing.assert_close(enc4.encode(VOCAB), first)
    assert torch.load(path, weights_only=True)['vocabulary'] == VOCAB


def test_frozen_and_always_eval(ckpt):
    enc = initialized(OVCLIPTextEncoder(tiny_cfg(), pretrained=ckpt))
    assert all(not p.requires_grad for p in enc.parameters())
    enc.train()
    assert not enc.training and not any(m.training for m in enc.modules())
    parent = torch.nn.Sequential(enc).train()
    assert parent.training and not enc.training
    assert not enc.encode(VOCAB, 'single').requires_grad


def test_registry_build():
    from mmseg.registry import MODELS
    enc = MODELS.build(dict(type='OVCLIPTextEncoder', clip_model=tiny_cfg(), templates='single'))
    assert isinstance(enc, OVCLIPTextEncoder) and enc.encode('cat, dog').shape == (2, 16)
    ctx = MODELS.build(dict(type='ContextCLIPTextEncoder', clip_model=tiny_cfg()))
    assert isinstance(ctx, ContextCLIPTextEncoder)


def test_strict_loading_errors(tmp_path):
    other = create_clip(tiny_cfg(width=48))
    path = tmp_path / 'other.pt'
    torch.save(other.state_dict(), path)
    with pytest.raises(ValueError, match='(?s)does not match the text tower.*wrong shape'):
        initialized(OVCLIPTextEncoder(tiny_cfg(), pretrained=str(path)))
    with pytest.raises(ValueError, match='does not match'):
        initialized(ContextCLIPTextEncoder(tiny_cfg(), pretrained=str(path)))
    with pytest.raises(FileNotFoundError, match='missing.pt'):
        initialized(OVCLIPTextEncoder(tiny_cfg(), pretrained=str(tmp_path / 'missing.pt')))
    with pytest.raises(ValueError, match='context_length must be in'):
        OVCLIPTextEncoder(tiny_cfg(), context_length=78)


def test_context_encoder_parity_with_template(clip, ckpt):
    """With the context vectors set to the embeddings of 'a photo of a', the learnable-context
    encoder must reproduce CLIP's embedding of 'a photo of a <name>.'."""
    enc = initialized(ContextCLIPTextEncoder(tiny_cfg(), pretrained=ckpt, num_contexts=4))
    words = tokenize('a photo of a')[0, 1:5]
    with torch.no_grad():
        enc.contexts.copy_(enc.token_embedding(words))
        ref = F.normalize(clip.encode_text(tokenize([f'a photo of a {c}.' for c in VOCAB])),
                          dim=-1)
    torch.testing.assert_close(enc(VOCAB), ref, atol=1e-5, rtol=1e-5)


def test_context_encoder_gradients_and_modes(ckpt):
    torch.manual_seed(1)
    enc = initialized(ContextCLIPTextEncoder(tiny_cfg(), pretrained=ckpt, num_contexts=8,
                                             context_length=13, name_suffix=''))  # DenseCLIP layout
    trainable = [n for n, p in enc.named_parameters() if p.requires_grad]
    assert trainable == ['contexts'] and enc.contexts.shape == (8, 32)
    assert abs(enc.contexts.std().item() - 0.02) < 0.01
    out = enc(VOCAB)
    assert out.shape == (3, 16)
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(3))
    out[:, 0].sum().backward()
    assert enc.contexts.grad is not None and enc.contexts.grad.abs().sum() > 0
    assert all(p.grad is None for n, p in enc.named_parameters() if n != 'contexts')
    enc.train()
    assert enc.training and not any(m.training for m in enc.children())
    with pytest.raises(ValueError, match="class 'a very long class name here' is"):
        enc(['a very long class name here'])
    with pytest.raises(ValueError, match='num_contexts must be in'):
        ContextCLIPTextEncoder(tiny_cfg(), num_contexts=11, context_length=13)
