"""CLIPVisionTransformer: open_clip parity, position-embedding resize, prompts, SLS tokens."""
import pytest
import torch
import torch.nn.functional as F

from mmseg_ovseg.clip.builder import create_clip
from mmseg_ovseg.models.backbones.clip_vit import (
    CLIPVisionTransformer,
    build_sls_attn_mask,
    resize_clip_pos_embed,
)
from mmseg_ovseg.models.layers.fast_path import ONEDNN_LINEAR, fast_path


def initialized(module):
    """``module`` after ``init_weights()``: CLIP towers read ``pretrained`` there
    (mmengine's convention), not at construction."""
    module.init_weights()
    return module


TINY = dict(
    embed_dim=32,
    quick_gelu=True,
    vision_cfg=dict(image_size=64, layers=3, width=64, head_width=16, patch_size=16),
    text_cfg=dict(context_length=77, vocab_size=49408, width=32, heads=2, layers=1))


@pytest.fixture(scope='module')
def clip():
    torch.manual_seed(0)
    return create_clip(TINY).eval()


def _backbone(clip, **kwargs):
    bb = CLIPVisionTransformer(TINY, **kwargs).eval()
    visual = {k: v for k, v in clip.state_dict().items() if k.startswith('visual.')}
    bb.load_state_dict(visual, strict=not kwargs.get('num_prompt_tokens'))
    return bb


@pytest.mark.slow
def test_global_embedding_matches_open_clip(clip):
    bb = _backbone(clip, out_indices=(0, 2), output_dense=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        outs = bb(x)
        ref = clip.visual(x)
    assert [tuple(o.shape) for o in outs] == [(2, 64, 4, 4), (2, 64, 4, 4), (2, 32, 4, 4),
                                              (2, 32)]
    torch.testing.assert_close(outs[-1], ref, atol=1e-5, rtol=1e-5)


def test_layer_outputs_match_open_clip_blocks(clip):
    bb = _backbone(clip, out_indices=(1, ), out_origin=True)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        origin, layer1 = bb(x)
        ref = clip.visual._embeds(x)
        ref_origin = ref[:, 1:].transpose(1, 2).reshape(1, 64, 4, 4)
        for blk in clip.visual.transformer.resblocks[:2]:
            ref = blk(ref)
    torch.testing.assert_close(origin, ref_origin)
    torch.testing.assert_close(layer1, ref[:, 1:].transpose(1, 2).reshape(1, 64, 4, 4),
                               atol=1e-5, rtol=1e-5)


def test_dense_embedding_is_ln_post_proj_of_patches(clip):
    bb = _backbone(clip, output_dense=True, normalize_dense=True)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        dense, glob = bb(x)[-2:]
        tokens = clip.visual.transformer(clip.visual._embeds(x))
        ref = clip.visual.ln_post(tokens[:, 1:]) @ clip.visual.proj
    ref = F.normalize(ref, dim=-1).transpose(1, 2).reshape(1, 32, 4, 4)
    torch.testing.assert_close(dense, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(glob.norm(dim=-1), torch.ones(1))


def test_pos_embed_resize():
    pos = torch.randn(1 + 4 * 4, 8)
    assert resize_clip_pos_embed(pos, (4, 4), (4, 4)) is pos
    out = resize_clip_pos_embed(pos, (4, 4), (6, 3))
    assert out.shape == (1 + 18, 8)
    torch.testing.assert_close(out[0], pos[0])
    grid = pos[1:].reshape(1, 4, 4, 8).permute(0, 3, 1, 2)
    ref = F.interpolate(grid, size=(6, 3), mode='bicubic', align_corners=False)
    torch.testing.assert_close(out[1:], ref.permute(0, 2, 3, 1).reshape(18, 8))
    with pytest.raises(ValueError, match='grid rows'):
        resize_clip_pos_embed(pos, (5, 5), (6, 6))


@pytest.mark.parametrize('size', [(37, 70), (5, 5), (96, 64)])
def test_any_input_size(clip, size):
    bb = _backbone(clip, out_indices=(2, ), output_dense=True)
    maps = bb(torch.randn(1, 3, *size))
    h, w = -(-size[0] // 16), -(-size[1] // 16)
    assert maps[0].shape == (1, 64, h, w) and maps[1].shape == (1, 32, h, w)


def test_bad_input_shape(clip):
    bb = _backbone(clip)
    with pytest.raises(ValueError, match=r'\(B, 3, H, W\)'):
        bb(torch.randn(1, 1, 64, 64))


def test_freezing_keeps_excluded_params_trainable(clip):
    bb = CLIPVisionTransformer(TINY, frozen=True, frozen_exclude=('positional_embedding', ))
    trainable = [n for n, p in bb.named_parameters() if p.requires_grad]
    assert trainable == ['visual.positional_embedding']
    bb = CLIPVisionTransformer(TINY, frozen=False)
    assert all(p.requires_grad for p in bb.parameters())


def test_deep_prompts_replace_previous_layer_prompts(clip):
    bb = _backbone(clip, num_prompt_tokens=3, prompt_depth=3, output_dense=True)
    trainable = {n for n, p in bb.named_parameters() if p.requires_grad}
    assert trainable == {'prompt_embeddings', 'prompt_proj.weight', 'prompt_proj.bias',
                         'prompt_norm.weight', 'prompt_norm.bias'}
    x = torch.randn(2, 3, 64, 64)
    tokens, hw = bb.embed(x)
    assert tokens.shape == (2, 1 + 3 + 16, 64)
    # Block 0's prompt outputs must not reach block 1: perturbing them changes nothing.
    after0, _ = bb.forward_blocks(tokens, 0, 1)
    poked = after0.clone()
    poked[:, 1:4] += 100.0
    out_a, _ = bb.forward_blocks(after0, 1, 3)
    out_b, _ = bb.forward_blocks(poked, 1, 3)
    torch.testing.assert_close(out_a, out_b)
    # Every layer's prompts get gradients.
    dense = bb(x)[-2]
    dense.sum().backward()
    assert (bb.prompt_embeddings.grad.abs().sum(dim=(1, 2)) > 0).all()
    assert all(p.grad is None for p in bb.visual.parameters())


def test_prompt_depth_zero_is_frozen_clip(clip):
    bb = _backbone(clip, num_prompt_tokens=5, prompt_depth=0, output_dense=True)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(bb(x)[-1], clip.visual(x), atol=1e-5, rtol=1e-5)


def test_sls_mask_layout():
    bias = torch.randn(1, 2, 3, 4)
    mask = build_sls_attn_mask(bias)
    assert mask.shape == (1, 2, 3, 1 + 4 + 3)
    assert (mask[..., 0] == -100).all()
    torch.testing.assert_close(mask[..., 1:5], bias)
    sls = mask[0, 0, :, 5:]
    torch.testing.assert_close(sls, torch.full((3, 3), -100.0).fill_diagonal_(0.0))


def test_sls_cross_attention_equals_joint_masked_attention(clip):
    """SAN's reference runs one (Q+1+L)^2 masked self-attention; ours must agree."""
    bb = _backbone(clip)
    x = torch.randn(2, 3, 64, 64)
    q, heads, n_layers = 5, bb.num_heads, bb.num_layers
    with torch.no_grad():
        tokens, hw = bb.embed(x)
        tokens, _ = bb.forward_blocks(tokens, 0, 1)
        bias = torch.randn(2, heads, q, hw[0] * hw[1])
        sls, vis = bb.forward_sls(tokens, bias, start=1)
        s, t = tokens[:, :1].expand(-1, q, -1), tokens
        for i in range(1, n_layers):
            blk = clip.visual.transformer.resblocks[i]
            joint = torch.cat([s, t], 1)
            n = joint.shape[1]
            mask = torch.zeros(2, heads, n, n)
            mask[..., :q] = -100.0  # nobody sees SLS tokens ...
            mask[:, :, :q, :q] = torch.full((q, q), -100.0).fill_diagonal_(0.0)  # ... but itself
            mask[:, :, :q, q] = -100.0  # SLS never sees CLS
            mask[:, :, :q, q + 1:] = bias
            y = blk.ln_1(joint)
            joint = joint + blk.attn(y, y, y, attn_mask=mask.flatten(0, 1), need_weights=False)[0]
            joint = joint + blk.mlp(blk.ln_2(joint))
            s, t = joint[:, :q], joint[:, q:]
        # CLS and patches equal plain CLIP.
        plain, _ = bb.forward_blocks(tokens, 1, n_layers)
    torch.testing.assert_close(sls, s, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(vis, t, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(vis, plain, atol=1e-5, rtol=1e-5)


def test_sls_per_layer_biases_and_errors(clip):
    bb = _backbone(clip)
    tokens, hw = bb.embed(torch.randn(1, 3, 64, 64))
    bias = torch.randn(1, bb.num_heads, 2, 16)
    shared, _ = bb.forward_sls(tokens, bias, start=1)
    per_layer, _ = bb.forward_sls(tokens, [bias, bias], start=1)
    torch.testing.assert_close(shared, per_layer)
    with pytest.raises(ValueError, match='recognition blocks'):
        bb.forward_sls(tokens, [bias], start=1)
    with pytest.raises(ValueError, match='does not match'):
        bb.forward_sls(tokens, torch.randn(1, bb.num_heads, 2, 9), start=1)


def test_loads_clip_checkpoint_and_rejects_other_architectures(clip, tmp_path):
    path = tmp_path / 'clip.pt'
    torch.save(clip.state_dict(), path)
    bb = initialized(CLIPVisionTransformer(TINY, pretrained=str(path), output_dense=True)).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(bb(x)[-1], clip.visual(x), atol=1e-5, rtol=1e-5)
    other = dict(TINY, vision_cfg=dict(TINY['vision_cfg'], width=32))
    torch.save(create_clip(other).state_dict(), tmp_path / 'other.pt')
    with pytest.raises(ValueError, match='wrong shape'):
        initialized(CLIPVisionTransformer(TINY, pretrained=str(tmp_path / 'other.pt')))
    with pytest.raises(FileNotFoundError, match='missing.pt'):
        initialized(CLIPVisionTransformer(TINY, pretrained=str(tmp_path / 'missing.pt')))


def test_resnet_name_is_rejected():
    with pytest.raises(TypeError, match='CLIPResNetWithAttention'):
        CLIPVisionTransformer('RN50')


@pytest.mark.slow
def test_prompts_leave_after_the_last_prompted_layer(clip):
    """With prompt_depth < layers, the last prompted layer's prompt outputs are dropped."""
    bb = _backbone(clip, num_prompt_tokens=3, prompt_depth=2, output_dense=True)
    tokens, hw = bb.embed(torch.randn(1, 3, 64, 64))
    out, _ = bb.forward_blocks(tokens, 0, 3)
    assert out.shape == (1, 1 + 16, 64)
    after1, _ = bb.forward_blocks(tokens, 0, 2)
    ref = bb.block_forward(2, torch.cat([after1[:, :1], after1[:, 4:]], dim=1))
    torch.testing.assert_close(out, ref)
    dense, glob = bb(torch.randn(1, 3, 64, 64))[-2:]
    assert dense.shape == (1, 32, 4, 4) and glob.shape == (1, 32)


@pytest.mark.slow
def test_autocast_reuses_low_precision_weight_copies(clip):
    """Under autocast the frozen weights are cast once (not per call), outputs unchanged, and
    the copy follows in-place updates of the parameter."""
    bb = _backbone(clip)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):
        first = bb(x)[0]
        n_cached = len(bb._cast_cache)
        cached = {k: v[1] for k, v in bb._cast_cache.items()}
        second = bb(x)[0]
    assert first.dtype == torch.bfloat16 and torch.equal(first, second)
    # every block's attention and MLP weights and biases, the patch embedding
    assert n_cached == 3 * 8 + 1
    assert all(bb._cast_cache[k][1] is v for k, v in cached.items())  # reused, not re-cast
    # QuickGELU is folded in: c_fc is cached times 1.702, c_proj divided by it
    mlp = bb.visual.transformer.resblocks[0].mlp
    a = 1.702
    assert torch.equal(bb._cast_cache[(id(mlp.c_fc.weight), a)][1],
                       (mlp.c_fc.weight * a).bfloat16())
    assert torch.equal(bb._cast_cache[(id(mlp.c_proj.weight), 1 / a)][1],
                       (mlp.c_proj.weight / a).bfloat16())
    # close to float32 and to autocast's own casts (QuickGELU is folded into the copies)
    with torch.no_grad():
        ref = bb(x)[0]
    with fast_path(False), torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):
        plain = bb(x)[0]  # autocast's own casts (and PyTorch's attention)
    assert plain.dtype == torch.bfloat16
    scale = ref.abs().max()
    assert (first.float() - ref).abs().max() < 0.05 * scale
    assert (first.float() - plain.float()).abs().max() < 0.05 * scale
    # an in-place update of a weight invalidates its copy
    with torch.no_grad():
        bb.visual.transformer.resblocks[0].mlp.c_fc.weight.mul_(2)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            changed = bb(x)[0]
    assert not torch.equal(changed, first)
    # float32 forward keeps no low-precision copies (only oneDNN-reordered float32 weights)
    bb.clear_cast_cache()
    with torch.no_grad():
        bb(x)
    assert all(key[0] == 'onednn' for key in bb._cast_cache)


def test_autocast_training_keeps_gradients_of_trainable_weights(clip):
    bb = _backbone(clip, frozen=True, frozen_exclude=('transformer.resblocks.2.mlp', ))
    bb.train()
    with torch.autocast('cpu', dtype=torch.bfloat16):
        bb(torch.randn(1, 3, 64, 64))[0].float().sum().backward()
    c_fc = bb.visual.transformer.resblocks[2].mlp.c_fc
    assert c_fc.weight.grad is not None and c_fc.weight.grad.abs().sum() > 0
    cached = {key[0] for key in bb._cast_cache}
    assert id(c_fc.weight) not in cached  # trainable: autocast's own cast
    assert id(bb.visual.transformer.resblocks[0].mlp.c_fc.weight) in cached


@pytest.mark.skipif(not ONEDNN_LINEAR, reason='no oneDNN linear op')
@pytest.mark.slow
def test_float32_inference_linears_on_reordered_onednn_weights(clip):
    """Float32 inference runs every block linear on a oneDNN weight reordered once (with
    QuickGELU folded into c_fc, and c_proj's bias left unscaled); results equal F.linear's."""
    bb = _backbone(clip)
    with torch.no_grad():  # non-zero biases, so that a wrongly scaled bias shows
        for name, p in bb.visual.transformer.named_parameters():
            if name.endswith('bias'):
                p.normal_(0, 0.5)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        first = bb(x)[0]
        cached = {k: v[1] for k, v in bb._cast_cache.items()}
        second = bb(x)[0]
    # in_proj, out_proj, c_fc, c_proj of each of the 3 blocks, as oneDNN tensors, reused
    assert len(cached) == 3 * 4 and all(k[0] == 'onednn' for k in cached)
    assert all(w.is_mkldnn for w, _ in cached.values())
    assert all(bb._cast_cache[k][1] is v for k, v in cached.items())
    c_fc, c_proj = (bb.visual.transformer.resblocks[0].mlp.c_fc,
                    bb.visual.transformer.resblocks[0].mlp.c_proj)
    a = 1.702
    torch.testing.assert_close(cached[('onednn', id(c_fc.weight), a, a, None)][1], c_fc.bias * a)
    torch.testing.assert_close(cached[('onednn', id(c_proj.weight), 1 / a, 1.0, None)][1],
                               c_proj.bias)
    assert torch.equal(first, second)
    bb.onednn_linear = False
    with torch.no_grad():
        ref = bb(x)[0]
    torch.testing.assert_close(first, ref, atol=1e-5, rtol=1e-5)
    bb.onednn_linear = True
    # SAN's SLS blocks (including the last block's key/value rows only) match too
    tokens, _ = bb.embed(x)
    bias = torch.randn(1, bb.num_heads, 3, tokens.shape[1] - 1)
    with torch.no_grad():
        sls = bb.forward_sls(tokens, bias, 1)[0]
        bb.onednn_linear = False
        sls_ref = bb.forward_sls(tokens, bias, 1)[0]
        bb.onednn_linear = True
    torch.testing.assert_close(sls, sls_ref, atol=1e-5, rtol=1e-5)
    # an in-place update of a weight rebuilds its reordered copy
    with torch.no_grad():
        c_fc.weight.mul_(2)
        changed = bb(x)[0]
    assert not torch.equal(changed, first)
    assert bb._cast_cache[('onednn', id(c_fc.weight), a, a, None)][1][0] is not \
        cached[('onednn', id(c_fc.weight), a, a, None)][0]
    # gradients to the input: F.linear (the oneDNN op has no autograd), nothing cached
    bb.clear_cast_cache()
    xg = x.clone().requires_grad_()
    bb(xg)[0].sum().backward()
    assert not bb._cast_cache and xg.grad.abs().sum() > 0

    # the config switch: onednn_linear=False keeps F.linear (no reordered copies)
    plain = _backbone(clip, onednn_linear=False)
    with torch.no_grad():
        plain(x)
    assert not plain._cast_cache


def test_pos_grid_resizes_the_position_embedding_once(clip, tmp_path):
    """pos_grid: CLIP's embedding is resized once, after `pretrained` is loaded, and kept at
    that grid; at that input size the forward equals the default per-forward resize."""
    ckpt = tmp_path / 'clip.pth'
    torch.save(clip.state_dict(), ckpt)
    base = initialized(CLIPVisionTransformer(TINY, pretrained=str(ckpt),
                                             interpolate_mode='bilinear')).eval()
    bb = initialized(CLIPVisionTransformer(TINY, pretrained=str(ckpt), interpolate_mode='bilinear',
                                           pos_grid=(8, 6))).eval()
    pos = clip.visual.positional_embedding.detach()
    assert bb.pos_grid == (8, 6) and bb.visual.positional_embedding.shape == (1 + 48, 64)
    assert isinstance(bb.visual.positional_embedding, torch.nn.Parameter)
    torch.testing.assert_close(bb.visual.positional_embedding.detach(),
                               resize_clip_pos_embed(pos, base.pos_grid, (8, 6), 1, 'bilinear'))
    x = torch.randn(1, 3, 128, 96)  # the (8, 6) patch grid
    with torch.no_grad():
        torch.testing.assert_close(bb(x)[0], base(x)[0])
        assert bb(torch.randn(1, 3, 64, 64))[0].shape[-2:] == (4, 4)  # still resizable
    with pytest.raises(ValueError, match='pos_grid'):
        CLIPVisionTransformer(TINY, pos_grid=(0, 4))
