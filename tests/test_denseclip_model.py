"""DenseCLIP at tiny widths: context decoder math, score map and FPN inputs, losses, gradients,
inference, text caching, vocabulary checks, a ViT backbone (split from test_denseclip.py; tests
unchanged)."""
import pytest
import torch
import torch.nn.functional as F

import mmseg_ovseg  # noqa: F401  (registers everything)
from mmseg_ovseg.models.necks.context_decoder import ContextDecoder
from test_denseclip import (
    TINY,
    VOCAB,
    K,
    _model,
    _quiet,  # noqa: F401  (autouse fixture)
    _samples,
)


# ---------------------------------------------------------------- context decoder
def _explicit_decoder(dec: ContextDecoder, text, ctx):
    """Sec. 3.3 written out with explicit per-head softmax attention (eval: no dropout)."""

    def ln(m, x):
        return F.layer_norm(x, m.normalized_shape, m.weight, m.bias, m.eps)

    def attn(m, q_in, kv_in, heads):
        B, Q, D = q_in.shape
        q = (q_in @ m.q_proj.weight.t()).view(B, Q, heads, -1).transpose(1, 2)
        k = (kv_in @ m.k_proj.weight.t()).view(B, -1, heads, D // heads).transpose(1, 2)
        v = (kv_in @ m.v_proj.weight.t()).view(B, -1, heads, D // heads).transpose(1, 2)
        a = torch.softmax(q @ k.transpose(-1, -2) / (D // heads)**0.5, dim=-1)
        o = (a @ v).transpose(1, 2).reshape(B, Q, D)
        return o @ m.out_proj.weight.t() + m.out_proj.bias

    mp, tp, op = dec.memory_proj, dec.text_proj, dec.out_proj
    mem = ln(mp[2], ln(mp[0], ctx) @ mp[1].weight.t() + mp[1].bias)
    x = ln(tp[0], text) @ tp[1].weight.t() + tp[1].bias
    for layer in dec.layers:
        h = ln(layer.norm1, x)
        x = x + attn(layer.self_attn, h, h, layer.self_attn.num_heads)
        x = x + attn(layer.cross_attn, ln(layer.norm2, x), mem, layer.cross_attn.num_heads)
        f = layer.ffn
        x = x + F.gelu(ln(layer.norm3, x) @ f[0].weight.t() + f[0].bias) @ f[3].weight.t() \
            + f[3].bias
    v_post = ln(op[0], x) @ op[1].weight.t() + op[1].bias
    return text + dec.gamma * v_post, v_post


@pytest.mark.slow
def test_context_decoder_matches_explicit_computation():
    torch.manual_seed(0)
    dec = ContextDecoder(visual_dim=12, embed_dims=8, num_heads=2, num_layers=2, dropout=0.1)
    assert torch.all(dec.gamma == 1e-4) and dec.gamma.shape == (12, )
    with torch.no_grad():
        dec.gamma.copy_(torch.randn(12))  # per-channel scale
        for p in dec.parameters():  # non-trivial LayerNorm affine parameters and biases
            if p.dim() == 1 and p is not dec.gamma:
                p.add_(torch.randn_like(p) * 0.3)
    dec.eval()
    text, ctx = torch.randn(2, 5, 12), torch.randn(2, 7, 12)
    out = dec(text, ctx)
    expected, v_post = _explicit_decoder(dec, text, ctx)
    assert out.shape == (2, 5, 12)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    # residual + gamma: out - t is exactly gamma * v_post
    torch.testing.assert_close(out - text, dec.gamma * dec.decode(text, ctx), rtol=1e-5,
                               atol=1e-6)
    torch.testing.assert_close(dec.decode(text, ctx), v_post, rtol=1e-5, atol=1e-5)
    # a (K, C) text is shared by the batch
    torch.testing.assert_close(dec(text[0], ctx), dec(text[0].expand(2, -1, -1), ctx))
    # gamma = 0 returns the text untouched
    with torch.no_grad():
        dec.gamma.zero_()
    assert torch.equal(dec(text, ctx), text)


def test_context_decoder_attends_to_the_visual_context():
    torch.manual_seed(0)
    dec = ContextDecoder(visual_dim=12, embed_dims=8, num_heads=2, num_layers=1,
                         dropout=0.0).eval()
    text, ctx = torch.randn(1, 3, 12), torch.randn(1, 6, 12)
    base = dec.decode(text, ctx)
    # different context -> different update; the memory is a set (order does not matter)
    assert not torch.allclose(base, dec.decode(text, torch.randn(1, 6, 12)), atol=1e-4)
    torch.testing.assert_close(dec.decode(text, ctx[:, torch.randperm(6)]), base)
    # each class query sees the context independently of the batch's other images
    two = dec.decode(text.expand(2, -1, -1), torch.cat([ctx, torch.randn(1, 6, 12)]))
    torch.testing.assert_close(two[:1], base)
    with pytest.raises(ValueError, match='visual_context'):
        dec(text, torch.randn(1, 6, 10))


# ---------------------------------------------------------------- segmentor
@pytest.mark.slow
def test_score_map_and_fpn_inputs():
    model = _model().eval()
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        stages, score, text = model.forward_features(x)
        # independent recomputation from the parts
        c2, c3, c4, c5, dense, glob = model.backbone(x)
        raw = model.text_encoder(VOCAB, normalize=False)
        ctx = torch.cat([glob[:, None], dense.flatten(2).transpose(1, 2)], dim=1)
        refined = raw + model.context_decoder.gamma * model.context_decoder.decode(
            raw.expand(2, -1, -1), ctx)
        expected = torch.einsum('bchw,bkc->bkhw', dense / dense.norm(dim=1, keepdim=True),
                                refined / refined.norm(dim=-1, keepdim=True))
        neck_out = model.extract_feat(x)
    assert [tuple(s.shape) for s in stages] == [(2, 32, 16, 24), (2, 64, 8, 12),
                                                (2, 128, 4, 6), (2, 256 + K, 2, 3)]
    assert score.shape == (2, K, 2, 3) and text.shape == (2, K, 32)
    torch.testing.assert_close(text, refined, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(score, expected, rtol=1e-5, atol=1e-5)
    assert score.abs().max() <= 1 + 1e-5
    torch.testing.assert_close(stages[3][:, :256], c5)  # C5 first, then the score map
    torch.testing.assert_close(stages[3][:, 256:], score)
    torch.testing.assert_close(stages[0], c2)
    # the refined text differs from the raw one (the context decoder is in the path)
    assert not torch.allclose(text[0], raw, atol=1e-3)
    assert [tuple(t.shape) for t in neck_out] == [(2, 16, 16, 24), (2, 16, 8, 12),
                                                  (2, 16, 4, 6), (2, 16, 2, 3)]


@pytest.mark.slow
def test_losses_include_identity_aux_on_score_map_over_tau():
    model = _model(tau=0.05).train()
    x = torch.randn(2, 3, 64, 64)
    samples = _samples(2, 64, 64)
    losses = model.loss(x, samples)
    assert set(losses) == {'decode.loss_ce', 'decode.acc_seg', 'aux_identity.loss_ce',
                           'aux_identity.acc_seg'}
    # the aux loss is 0.4 * CE(upsampled score_map / tau) (no dropout on the score path)
    _, score, _ = model.forward_features(x)
    label = torch.cat([s.gt_sem_seg.data for s in samples])
    logits = F.interpolate(score / 0.05, size=(64, 64), mode='bilinear', align_corners=False)
    expected = 0.4 * F.cross_entropy(logits, label)
    torch.testing.assert_close(losses['aux_identity.loss_ce'], expected, rtol=1e-4, atol=1e-5)
    no_aux = _model(identity_head=None).train()
    assert set(no_aux.loss(x, samples)) == {'decode.loss_ce', 'decode.acc_seg'}


@pytest.mark.slow
def test_gradients_reach_prompts_and_decoder_not_frozen_tower():
    model = _model().train()
    losses = model.loss(torch.randn(2, 3, 64, 64), _samples(2, 64, 64))
    sum(v for k, v in losses.items() if 'loss' in k).backward()
    named = dict(model.named_parameters())
    for name in ('text_encoder.contexts', 'context_decoder.gamma',
                 'context_decoder.layers.0.cross_attn.q_proj.weight',
                 'context_decoder.memory_proj.1.weight', 'context_decoder.text_proj.1.weight',
                 'backbone.visual.attnpool.c_proj.weight', 'backbone.visual.conv1.weight',
                 'neck.lateral_convs.3.conv.weight', 'decode_head.conv_seg.weight'):
        grad = named[name].grad
        assert grad is not None and grad.abs().sum() > 0, name
    frozen = [n for n, p in named.items() if n.startswith('text_encoder.')
              and n != 'text_encoder.contexts']
    assert frozen and all(not named[n].requires_grad and named[n].grad is None for n in frozen)
    assert not hasattr(model.identity_head, 'conv_seg')


@pytest.mark.slow
def test_identity_aux_loss_alone_trains_the_prompts():
    """The aux loss reaches the contexts through the score map (Sec. 3.4)."""
    model = _model().train()
    x, samples = torch.randn(2, 3, 64, 64), _samples(2, 64, 64)
    _, score, _ = model.forward_features(x)
    model.identity_head.loss(score / model.tau, samples, None)['loss_ce'].backward()
    assert model.text_encoder.contexts.grad.abs().sum() > 0
    assert model.decode_head.conv_seg.weight.grad is None


@pytest.mark.parametrize('mode', ['whole', 'slide'])
@pytest.mark.slow
def test_predict_odd_sizes(mode):
    test_cfg = dict(mode='whole') if mode == 'whole' else dict(
        mode='slide', crop_size=(32, 32), stride=(24, 24))
    model = _model(test_cfg=test_cfg).eval()
    with torch.no_grad():
        out = model.predict(torch.randn(1, 3, 50, 70), _samples(1, 50, 70))
    assert out[0].pred_sem_seg.data.shape == (1, 50, 70)
    assert out[0].seg_logits.data.shape == (K, 50, 70)
    assert int(out[0].pred_sem_seg.data.max()) < K


def test_eval_text_features_are_cached_until_weights_change():
    model = _model().eval()
    first = model.text_features()
    assert model.text_features() is first and not first.requires_grad
    with torch.no_grad():
        model.text_encoder.contexts.add_(1.0)  # an optimizer step / load_state_dict
    second = model.text_features()
    assert second is not first and not torch.allclose(second, first)
    torch.testing.assert_close(second, model.text_encoder(VOCAB, normalize=False))
    with torch.inference_mode():
        assert model.text_features().is_inference()
    assert not model.text_features().is_inference()  # usable outside inference mode
    model.train()
    assert model.text_features().requires_grad


def test_vocabulary_size_is_fixed_and_channels_checked():
    model = _model()
    model.set_vocabulary(['cat', 'dog', 'bus'])
    assert model.vocabulary == ['cat', 'dog', 'bus']
    with pytest.raises(ValueError, match='fixed number of classes'):
        model.set_vocabulary(['cat', 'dog'])
    with pytest.raises(ValueError, match='neck.in_channels'):
        _model(neck=dict(type='FPN', in_channels=[32, 64, 128, 256], out_channels=16,
                         num_outs=4))
    with pytest.raises(ValueError, match='visual_dim'):
        _model(context_decoder=dict(type='ContextDecoder', visual_dim=64, embed_dims=16,
                                    num_heads=2, num_layers=1))


@pytest.mark.slow
def test_vit_backbone_is_accepted():
    vit = dict(embed_dim=32, vision_cfg=dict(image_size=32, layers=2, width=32, head_width=16,
                                             patch_size=8),
               text_cfg=TINY['text_cfg'])
    model = _model(
        backbone=dict(type='CLIPVisionTransformer', clip_model=vit, out_indices=(0, 1),
                      output_dense=True),
        score_concat_index=1,
        neck=dict(type='FPN', in_channels=[32, 32 + K], out_channels=16, num_outs=2),
        decode_head=dict(type='FPNHead', in_channels=[16] * 2, in_index=[0, 1],
                         feature_strides=[8, 8], channels=16,
                         norm_cfg=dict(type='BN', requires_grad=True))).eval()
    with torch.no_grad():
        stages, score, _ = model.forward_features(torch.randn(1, 3, 32, 48))
        logits = model._forward(torch.randn(1, 3, 32, 48))
    assert stages[1].shape == (1, 32 + K, 4, 6) and score.shape == (1, K, 4, 6)
    assert logits.shape[1] == K
