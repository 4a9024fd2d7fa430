"""DenseCLIP pre-model prompting (paper Sec. 3.3): the decoder against an explicit
computation, per-image context tokens into the text tower, batching, gradients to the query
tokens, the segmentor switch and the configs."""
import os.path as osp

import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config, ConfigDict
from mmengine.logging import MMLogger
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope
from mmengine.structures import PixelData
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample

import mmseg_ovseg  # noqa: F401  (registers everything)
from mmseg_ovseg.models.necks import ContextDecoder, PreModelPrompting

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
# ResNet stages 32/64/128/256 channels, CLIP embed dim 32, text width 24 (!= 32, so token
# width and embed dim cannot be confused).
TINY = dict(
    embed_dim=32,
    vision_cfg=dict(image_size=64, layers=[1, 1, 1, 1], width=8, head_width=32),
    text_cfg=dict(context_length=77, vocab_size=49408, width=24, heads=2, layers=1))
VOCAB = ['cat', 'dog', 'car']
K, N, W, C = len(VOCAB), 4, 24, 32


def _cfg(**kwargs):
    cfg = dict(
        type='DenseCLIP',
        vocabulary=VOCAB,
        data_preprocessor=dict(type='SegDataPreProcessor', mean=[0, 0, 0], std=[1, 1, 1]),
        backbone=dict(type='CLIPResNetWithAttention', clip_model=TINY),
        text_encoder=dict(type='ContextCLIPTextEncoder', clip_model=TINY, num_contexts=N,
                          context_length=9, name_suffix='', init_std=1.0),
        context_decoder=None,
        pre_prompting=dict(type='PreModelPrompting', visual_dim=C, token_dim=W,
                           num_queries=N, embed_dims=16, num_heads=2, num_layers=2,
                           dropout=0.0),
        neck=dict(type='FPN', in_channels=[32, 64, 128, 256 + K], out_channels=16, num_outs=4),
        decode_head=dict(type='FPNHead', in_channels=[16] * 4, in_index=[0, 1, 2, 3],
                         feature_strides=[4, 8, 16, 32], channels=16, dropout_ratio=0.1,
                         norm_cfg=dict(type='BN', requires_grad=True)),
        identity_head=dict(type='IdentityHead',
                           loss_decode=dict(type='CrossEntropyLoss', loss_weight=0.4)),
        test_cfg=dict(mode='whole'))
    cfg.update(kwargs)
    return cfg


def _model(seed=0, **kwargs):
    init_default_scope('mmseg')
    torch.manual_seed(seed)
    model = MODELS.build(ConfigDict(_cfg(**kwargs)))
    # At the init scale (weights std 0.02) attention is nearly uniform and the tokens of two
    # random images differ by ~1e-4: perturbed weights make the per-image differences plain.
    with torch.no_grad():
        for p in model.pre_prompting.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    return model


def _samples(b, h, w, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(b):
        s = SegDataSample()
        s.gt_sem_seg = PixelData(data=torch.randint(0, K, (1, h, w), generator=g))
        s.set_metainfo(dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w)))
        out.append(s)
    return out


@pytest.fixture(autouse=True)
def _quiet():
    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel('WARNING')
    yield
    logger.setLevel(level)


# ---------------------------------------------------------------- the module
def _explicit_pre(m: PreModelPrompting, ctx):
    """v_pre = TransDecoder(q, [z_bar; z]) written out (per-head softmax attention, eval)."""

    def ln(mod, x):
        return F.layer_norm(x, mod.normalized_shape, mod.weight, mod.bias, mod.eps)

    def lin(mod, x):
        return x @ mod.weight.t() + (0 if mod.bias is None else mod.bias)

    def attn(a, q_in, kv_in):
        B, Q, D = q_in.shape
        h = a.num_heads
        q = lin(a.q_proj, q_in).view(B, Q, h, -1).transpose(1, 2)
        k = lin(a.k_proj, kv_in).view(B, -1, h, D // h).transpose(1, 2)
        v = lin(a.v_proj, kv_in).view(B, -1, h, D // h).transpose(1, 2)
        p = torch.softmax(q @ k.transpose(-1, -2) / (D // h)**0.5, dim=-1)
        return lin(a.out_proj, (p @ v).transpose(1, 2).reshape(B, Q, D))

    qp, mp, op = m.query_proj, m.memory_proj, m.out_proj
    mem = ln(mp[2], lin(mp[1], ln(mp[0], ctx)))
    x = lin(qp[1], ln(qp[0], m.queries)).expand(ctx.shape[0], -1, -1)
    for layer in m.layers:
        h = ln(layer.norm1, x)
        x = x + attn(layer.self_attn, h, h)
        x = x + attn(layer.cross_attn, ln(layer.norm2, x), mem)
        f = layer.ffn
        x = x + lin(f[3], F.gelu(lin(f[0], ln(layer.norm3, x))))
    return lin(op[1], ln(op[0], x))


def test_module_shapes_and_explicit_computation():
    torch.manual_seed(0)
    m = PreModelPrompting(visual_dim=12, token_dim=10, num_queries=5, embed_dims=8,
                          num_heads=2, num_layers=2).eval()
    with torch.no_grad():  # non-trivial LayerNorms and queries
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    ctx = torch.randn(3, 1 + 6 * 7, 12)
    out = m(ctx)
    assert out.shape == (3, 5, 10)
    torch.testing.assert_close(out, _explicit_pre(m, ctx), rtol=1e-5, atol=1e-5)
    # the tokens depend on the image: another context, other tokens; a sample's tokens do
    # not depend on the rest of the batch
    assert not torch.allclose(out[0], out[1], atol=1e-3)
    torch.testing.assert_close(m(ctx[1:2]), out[1:2], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match=r'\(B, M, 12\)'):
        m(torch.randn(3, 4, 11))


@pytest.mark.slow
def test_module_sizes_mirror_the_post_model_decoder():
    """Same decoder as post-model prompting (RN50 sizes), with the N x C queries instead of
    gamma and an output projection to the token width W = 512 instead of C = 1024."""
    post = ContextDecoder(visual_dim=1024, embed_dims=256, num_heads=4, num_layers=3)
    pre = PreModelPrompting(visual_dim=1024, token_dim=512, num_queries=8, embed_dims=256,
                            num_heads=4, num_layers=3)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    expected = count(post) - 1024 - (256 * 1024 + 1024) + (256 * 512 + 512) + 8 * 1024
    assert count(pre) == expected
    assert pre.queries.shape == (8, 1024)


# ---------------------------------------------------------------- text encoder, per image
def test_text_encoder_per_image_contexts_equal_one_encoder_call_per_image():
    init_default_scope('mmseg')
    torch.manual_seed(0)
    enc = MODELS.build(dict(type='ContextCLIPTextEncoder', clip_model=TINY, num_contexts=N,
                            context_length=9, name_suffix='', init_std=1.0))
    contexts = torch.randn(3, N, W)
    batched = enc(VOCAB, normalize=False, contexts=contexts)
    assert batched.shape == (3, K, C)
    for b in range(3):
        with torch.no_grad():
            enc.contexts.copy_(contexts[b])
        torch.testing.assert_close(batched[b], enc(VOCAB, normalize=False),
                                   rtol=1e-5, atol=1e-6)
    assert not torch.allclose(batched[0], batched[1], atol=1e-3)
    torch.testing.assert_close(enc(VOCAB, contexts=contexts), F.normalize(batched, dim=-1))
    with pytest.raises(ValueError, match=r'contexts must be \(B, 4, 24\)'):
        enc(VOCAB, contexts=torch.randn(2, N + 1, W))


# ---------------------------------------------------------------- the segmentor
@pytest.mark.slow
def test_text_tower_receives_the_visual_context_as_its_context_tokens():
    model = _model().eval()
    seen = {}
    model.backbone.register_forward_hook(lambda m, i, o: seen.__setitem__('backbone', o))
    model.pre_prompting.register_forward_hook(
        lambda m, i, o: seen.update(pre_in=i[0], pre_out=o))
    model.text_encoder.transformer.register_forward_pre_hook(
        lambda m, args, kwargs: seen.__setitem__('tower_in', args[0]), with_kwargs=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        _, score, text = model.forward_features(x)
    dense, glob = seen['backbone'][-2], seen['backbone'][-1]
    # the decoder reads [z_bar; z] of this image
    visual = torch.cat([glob[:, None], dense.flatten(2).transpose(1, 2)], 1)
    torch.testing.assert_close(seen['pre_in'], visual)
    v_pre = seen['pre_out']
    assert v_pre.shape == (2, N, W)
    # tower input: (B*K, L, W) token embeddings + positions; slots 1..N hold v_pre of the
    # image the sequence belongs to, for every class; SOT and the name tokens are CLIP's
    tower_in = seen['tower_in']
    enc = model.text_encoder
    assert tower_in.shape == (2 * K, 9, W)
    tokens = enc._tokens(VOCAB)
    embeds = tower_in - enc.positional_embedding[:9]
    for b in range(2):
        for k in range(K):
            row = embeds[b * K + k]
            torch.testing.assert_close(row[1:1 + N], v_pre[b], rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(row[:1], enc.token_embedding(tokens[k, :1]),
                                       rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(row[1 + N:], enc.token_embedding(tokens[k, 1 + N:]),
                                       rtol=1e-5, atol=1e-5)
    # the text features are the tower's output for those sequences, one set per image
    assert text.shape == (2, K, C)
    torch.testing.assert_close(text, enc(VOCAB, normalize=False, contexts=v_pre))
    expected = torch.einsum('bchw,bkc->bkhw', F.normalize(dense, dim=1),
                            F.normalize(text, dim=-1))
    torch.testing.assert_close(score, expected)


@pytest.mark.slow
def test_per_image_text_embeddings_differ_and_batching_is_per_image():
    model = _model().eval()
    g = torch.Generator().manual_seed(1)
    # two different images (the tiny random ResNet maps two noise images to nearly the same
    # context, so the second one has other statistics)
    a = torch.randn(1, 3, 64, 64, generator=g)
    b = a * 4 + 3
    with torch.no_grad():
        _, _, text = model.forward_features(torch.cat([a, b, a]))
        _, _, text_a = model.forward_features(a)
        _, _, text_b = model.forward_features(b)
    assert text.shape == (3, K, C)
    assert (text[0] - text[1]).abs().max() > 1e-3 * text[0].abs().max()
    torch.testing.assert_close(text[0], text[2])
    torch.testing.assert_close(text[:1], text_a, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(text[1:2], text_b, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_gradients_reach_the_query_tokens_and_not_the_frozen_tower():
    model = _model().train()
    losses = model.loss(torch.randn(2, 3, 64, 64), _samples(2, 64, 64))
    assert {'decode.loss_ce', 'aux_identity.loss_ce'} <= set(losses)
    sum(v for k, v in losses.items() if 'loss' in k).backward()
    named = dict(model.named_parameters())
    for name in ('pre_prompting.queries', 'pre_prompting.query_proj.1.weight',
                 'pre_prompting.memory_proj.1.weight',
                 'pre_prompting.layers.0.cross_attn.q_proj.weight',
                 'pre_prompting.layers.1.ffn.3.weight', 'pre_prompting.out_proj.1.weight',
                 'backbone.visual.attnpool.c_proj.weight', 'decode_head.conv_seg.weight'):
        grad = named[name].grad
        assert grad is not None and grad.abs().sum() > 0, name
    # the learnable contexts are replaced by v_pre: frozen, no gradient
    assert not named['text_encoder.contexts'].requires_grad
    tower = [n for n in named if n.startswith('text_encoder.')]
    assert tower and all(named[n].grad is None and not named[n].requires_grad for n in tower)
    assert model.context_decoder is None


@pytest.mark.slow
def test_aux_loss_alone_reaches_the_queries_through_the_text_tower():
    model = _model().train()
    _, score, _ = model.forward_features(torch.randn(2, 3, 64, 64))
    model.identity_head.loss(score / model.tau, _samples(2, 64, 64), None)['loss_ce'].backward()
    assert model.pre_prompting.queries.grad.abs().sum() > 0


@pytest.mark.slow
def test_pre_and_post_prompting_together():
    """Not a paper setting, but the switch composes: v_pre contexts, then post refinement."""
    post = dict(type='ContextDecoder', visual_dim=C, embed_dims=16, num_heads=2,
                num_layers=1, dropout=0.0)
    model = _model(context_decoder=post).eval()
    with torch.no_grad():
        model.context_decoder.gamma.fill_(0.5)
        x = torch.randn(2, 3, 64, 64)
        _, _, text = model.forward_features(x)
        backbone = model.backbone(x)
        visual = torch.cat([backbone[-1][:, None], backbone[-2].flatten(2).transpose(1, 2)], 1)
        raw = model.text_encoder(VOCAB, normalize=False, contexts=model.pre_prompting(visual))
        torch.testing.assert_close(text, model.context_decoder(raw, visual))


@pytest.mark.parametrize('mode', ['whole', 'slide'])
@pytest.mark.slow
def test_predict(mode):
    test_cfg = dict(mode='whole') if mode == 'whole' else dict(
        mode='slide', crop_size=(32, 32), stride=(24, 24))
    model = _model(test_cfg=test_cfg).eval()
    with torch.no_grad():
        out = model.predict(torch.randn(2, 3, 50, 70), _samples(2, 50, 70))
    assert out[0].pred_sem_seg.data.shape == (1, 50, 70)
    assert out[1].seg_logits.data.shape == (K, 50, 70)


def test_build_time_checks():
    with pytest.raises(ValueError, match='8 tokens of width 24.*4 contexts of width 24'):
        _model(pre_prompting=dict(type='PreModelPrompting', visual_dim=C, token_dim=W,
                                  num_queries=8, embed_dims=16, num_heads=2))
    with pytest.raises(ValueError, match='4 tokens of width 32.*4 contexts of width 24'):
        _model(pre_prompting=dict(type='PreModelPrompting', visual_dim=C, token_dim=32,
                                  num_queries=N, embed_dims=16, num_heads=2))
    with pytest.raises(ValueError, match='pre_prompting.visual_dim is 64'):
        _model(pre_prompting=dict(type='PreModelPrompting', visual_dim=64, token_dim=W,
                                  num_queries=N, embed_dims=16, num_heads=2))


# ---------------------------------------------------------------- configs
def _groups_by_param(optim_wrapper, model):
    ids = {id(p): n for n, p in model.named_parameters()}
    return {ids[id(p)]: g for g in optim_wrapper.optimizer.param_groups for p in g['params']}


@pytest.mark.slow
def test_tiny_pre_config_trains_one_step():
    cfg = Config.fromfile(osp.join(REPO, 'configs', 'denseclip-pre_tiny_synthetic.py'))
    assert cfg.model.context_decoder is None
    cfg.model.data_preprocessor.size = (64, 64)
    init_default_scope('mmseg')
    model = MODELS.build(cfg.model)
    model.init_weights()
    wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    groups = _groups_by_param(wrapper, model)
    assert 'pre_prompting.queries' in groups and 'text_encoder.contexts' not in groups
    assert not any(n.startswith('text_encoder.') for n in groups)
    g = torch.Generator().manual_seed(0)
    data = dict(inputs=[torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8, generator=g)
                        for _ in range(2)],
                data_samples=_samples(2, 64, 64))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    model.train()
    log = model.train_step(data, wrapper)
    assert torch.isfinite(log['loss'])
    after = dict(model.named_parameters())
    for name in ('pre_prompting.queries', 'pre_prompting.out_proj.1.weight',
                 'backbone.visual.layer4.0.conv1.weight', 'decode_head.conv_seg.weight'):
        assert not torch.equal(before[name], after[name]), name
    for name in ('text_encoder.contexts', 'text_encoder.token_embedding.weight'):
        assert torch.equal(before[name], after[name]), name


def test_r50_pre_config():
    """The ADE20K pre-model config: the RN50 recipe with the decoder swapped, built on the
    meta device (no CLIP files needed)."""
    cfg = Config.fromfile(osp.join(REPO, 'configs', 'denseclip-pre_fpn_r50_ade20k-512x512.py'))
    m = cfg.model
    assert m.context_decoder is None and m.pre_prompting.type == 'PreModelPrompting'
    assert (m.pre_prompting.visual_dim, m.pre_prompting.token_dim) == (1024, 512)
    assert m.pre_prompting.num_queries == m.text_encoder.num_contexts == 8
    assert m.backbone.clip_model == m.text_encoder.clip_model == 'RN50-quickgelu'
    assert cfg.optim_wrapper.optimizer.lr == 1e-4 and cfg.train_cfg.max_iters == 80000
    m.backbone.pretrained = m.text_encoder.pretrained = None
    init_default_scope('mmseg')
    with torch.device('meta'):
        model = MODELS.build(m)
    assert model.context_decoder is None
    assert isinstance(model.pre_prompting, PreModelPrompting)
    assert not model.text_encoder.contexts.requires_grad
