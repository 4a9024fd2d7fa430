"""The shared attention kernel: blocked path == SDPA, and when each path is taken."""
import pytest
import torch
import torch.nn.functional as F

import mmseg_ovseg.models.layers.fast_path as attn_mod
from mmseg_ovseg.models.backbones.clip_vit import build_sls_attn_mask
from mmseg_ovseg.models.decode_heads.side_adapter import SideAdapterBlock
from mmseg_ovseg.models.layers.fast_path import blocked_attention, uses_blocked_attention
from mmseg_ovseg.models.layers.fast_path import sdpa as attention


def _qkv(b, h, nq, nk, d, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(b, h, nq, d, generator=g) * 2
    k = torch.randn(b, h, nk, d, generator=g) * 2
    v = torch.randn(b, h, nk, d, generator=g)
    return q.to(dtype), k.to(dtype), v.to(dtype)


@pytest.mark.parametrize('tile_elems', [1, 3 * 40 * 16 * 2, 1 << 20])
def test_blocked_equals_sdpa_float32(tile_elems):
    # Blocks of 16 rows (tile_elems 1), 32 rows with a remainder block (45 = 32 + 13), one block.
    q, k, v = _qkv(2, 3, 45, 40, 8)
    ref = F.scaled_dot_product_attention(q, k, v)
    out = blocked_attention(q, k, v, tile_elems=tile_elems)
    assert out.shape == (2, 3, 45, 8) and out.is_contiguous()
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_blocked_with_sls_mask_and_strided_inputs_float32():
    """SAN's SLS mask (-100 on CLS/other SLS, bias on patches), q/k/v as views of one qkv."""
    b, h, n_patch, n_sls, d = 2, 4, 36, 5, 8
    n = 1 + n_patch + n_sls
    qkv = torch.randn(b, n, 3, h, d)
    q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # non-contiguous (B, heads, N, d)
    mask = build_sls_attn_mask(torch.randn(b, h, n_sls, n_patch))
    ref = F.scaled_dot_product_attention(q[:, :, -n_sls:], k, v, attn_mask=mask)
    out = blocked_attention(q[:, :, -n_sls:], k, v, attn_mask=mask, tile_elems=1)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    # A mask shared by the batch (broadcast over B) gives the same as its expanded copy.
    shared = mask[:1]
    torch.testing.assert_close(
        blocked_attention(q[:, :, -n_sls:], k, v, attn_mask=shared),
        F.scaled_dot_product_attention(q[:, :, -n_sls:], k, v, attn_mask=shared.expand_as(mask)),
        atol=1e-5, rtol=1e-5)
    with pytest.raises(TypeError, match='additive float mask'):
        blocked_attention(q, k, v, attn_mask=torch.ones(n, n, dtype=torch.bool))


def test_blocked_bf16_error_of_the_order_of_sdpa_bf16():
    """Against float32 attention on the unrounded inputs, the blocked bf16 path (bf16 scores)
    errs by the same order as PyTorch's bf16 flash kernel (float32 scores): ~1.6-2.4x."""
    q, k, v = _qkv(1, 6, 170, 170, 40, seed=1)
    q, k = q / 2, k / 2  # logits up to ~25, as a trained ViT's
    ref = F.scaled_dot_product_attention(q, k, v)
    q16, k16, v16 = q.bfloat16(), k.bfloat16(), v.bfloat16()
    out = blocked_attention(q16, k16, v16, tile_elems=6 * 170 * 48)
    assert out.dtype == torch.bfloat16
    err = (out.float() - ref).abs().max()
    err_sdpa = (F.scaled_dot_product_attention(q16, k16, v16).float() - ref).abs().max()
    assert err < 4 * err_sdpa and err < 0.02, (err, err_sdpa)


def test_dispatch():
    q, k, v = _qkv(1, 2, 8, 8, 4, dtype=torch.bfloat16)
    with torch.no_grad():
        assert uses_blocked_attention(q, k, v)
    assert uses_blocked_attention(q, k, v)  # grad mode on, but nothing requires grad
    assert not uses_blocked_attention(q.float(), k.float(), v.float())
    assert not uses_blocked_attention(q.requires_grad_(), k, v)  # training: autograd-able SDPA
    out = attention(q, k, v)
    out.float().sum().backward()
    assert q.grad is not None and q.grad.abs().sum() > 0


def test_side_adapter_block_takes_blocked_path_under_cpu_autocast(monkeypatch):
    """The SAN hot path: a side block under bf16 autocast inference runs the blocked kernel
    and gives SDPA's result to bf16 precision; float32 runs SDPA."""
    torch.manual_seed(0)
    blk = SideAdapterBlock(48, 6).eval()
    x = torch.randn(1, 70, 48)
    calls = []
    real = attn_mod.blocked_attention
    monkeypatch.setattr(attn_mod, 'blocked_attention',
                        lambda *a, **kw: calls.append(a[0].shape) or real(*a, **kw))
    with torch.no_grad():
        ref = blk(x)
        assert calls == []
        with torch.autocast('cpu', dtype=torch.bfloat16):
            out = blk(x)
    assert calls == [(1, 6, 70, 8)]
    torch.testing.assert_close(out.float(), ref, atol=0.1, rtol=0.05)
