"""layers.MultiheadAttention against PyTorch's own attention (nn.MultiheadAttention and
F.scaled_dot_product_attention) with copied weights, on random inputs."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from mmseg_ovseg.models.layers import MultiheadAttention


def _copy_into_torch(ours: MultiheadAttention, ref: nn.MultiheadAttention) -> None:
    """Our projections -> torch's packed ``in_proj`` and ``out_proj``."""
    names = ours.proj_names
    with torch.no_grad():
        if ours.fused_qkv:
            qkv = getattr(ours, names[0])
            ref.in_proj_weight.copy_(qkv.weight)
            ref.in_proj_bias.copy_(qkv.bias)
        else:
            lins = [getattr(ours, n) for n in names[:3]]
            ref.in_proj_weight.copy_(torch.cat([lin.weight for lin in lins]))
            ref.in_proj_bias.copy_(torch.cat([lin.bias for lin in lins]))
        ref.out_proj.load_state_dict(getattr(ours, names[-1]).state_dict())


def _pair(dims=24, heads=4, seed=0, **kwargs):
    torch.manual_seed(seed)
    ours = MultiheadAttention(dims, heads, **kwargs).eval()
    for p in ours.parameters():  # non-zero biases, so a dropped bias shows
        nn.init.normal_(p, std=0.3)
    ref = nn.MultiheadAttention(dims, heads, batch_first=True).eval()
    _copy_into_torch(ours, ref)
    return ours, ref


@pytest.mark.parametrize('fused', [True, False])
def test_self_attention_equals_torch_multihead_attention_with_key_padding(fused):
    ours, ref = _pair(fused_qkv=fused)
    x = torch.randn(3, 7, 24)
    pad = torch.zeros(3, 7, dtype=torch.bool)
    pad[1, 5:] = True
    pad[2, 1:] = True
    bias = torch.zeros(3, 1, 1, 7).masked_fill(pad[:, None, None], float('-inf'))
    with torch.no_grad():
        expected, weights = ref(x, x, x, key_padding_mask=pad, need_weights=True,
                                average_attn_weights=False)
        out = ours(x, bias=bias)
        out_l, logits = ours(x, bias=bias, return_logits=True)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out_l, expected, rtol=1e-5, atol=1e-5)
    # the logits are pre-softmax: torch's per-head attention weights are their softmax
    assert logits.shape == (3, 4, 7, 7)
    torch.testing.assert_close(logits.softmax(-1), weights, rtol=1e-5, atol=1e-6)
    assert torch.isinf(logits[2, :, :, 1:]).all() and torch.isfinite(logits[2, :, :, 0]).all()


def test_cross_attention_equals_torch_and_logits_are_scaled_dot_products():
    ours, ref = _pair(dims=32, heads=8, seed=1, proj_names=('q', 'k', 'v', 'proj'))
    query, memory = torch.randn(2, 5, 32), torch.randn(2, 13, 32)
    with torch.no_grad():
        expected, weights = ref(query, memory, memory, need_weights=True,
                                average_attn_weights=False)
        out, logits = ours(query, memory, return_logits=True)
        plain = ours(query, memory)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(plain, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(logits.softmax(-1), weights, rtol=1e-5, atol=1e-6)
    # per head, by hand from torch's own packed projection: q_h k_h^T / sqrt(d)
    w_q, w_k, _ = ref.in_proj_weight.chunk(3)
    b_q, b_k, _ = ref.in_proj_bias.chunk(3)
    q, k = F.linear(query, w_q, b_q), F.linear(memory, w_k, b_k)
    for h in range(8):
        sl = slice(4 * h, 4 * (h + 1))
        torch.testing.assert_close(logits[:, h], q[..., sl] @ k[..., sl].transpose(1, 2) / 2.0,
                                   rtol=1e-5, atol=1e-5)


def test_heads_equal_scaled_dot_product_attention_with_float_bias():
    """An arbitrary additive bias (SAN's attention bias is one) on both paths."""
    ours, _ = _pair(dims=16, heads=2, seed=2)
    query, memory = torch.randn(2, 4, 16), torch.randn(2, 6, 16)
    bias = torch.randn(2, 2, 4, 6)
    with torch.no_grad():
        q, k, v = (F.linear(x, lin.weight, lin.bias).view(2, -1, 2, 8).transpose(1, 2)
                   for x, lin in zip((query, memory, memory),
                                     (ours.q_proj, ours.k_proj, ours.v_proj)))
        heads = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        expected = ours.out_proj(heads.transpose(1, 2).reshape(2, 4, 16))
        torch.testing.assert_close(ours(query, memory, bias), expected, rtol=1e-5, atol=1e-5)
        out, logits = ours(query, memory, bias, return_logits=True)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(logits - bias, q @ k.transpose(-1, -2) / 8**0.5,
                               rtol=1e-5, atol=1e-5)


def test_gradients_equal_torch():
    ours, ref = _pair(dims=16, heads=4, seed=3, fused_qkv=True)
    x = torch.randn(2, 6, 16)
    ours(x).square().sum().backward()
    ref(x, x, x, need_weights=False)[0].square().sum().backward()
    torch.testing.assert_close(ours.qkv.weight.grad, ref.in_proj_weight.grad,
                               rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ours.proj.weight.grad, ref.out_proj.weight.grad,
                               rtol=1e-4, atol=1e-5)


def test_state_dict_names_and_options():
    keys = lambda m: sorted(m.state_dict())  # noqa: E731
    assert keys(MultiheadAttention(8, 2)) == sorted(
        f'{n}.{p}' for n in ('q_proj', 'k_proj', 'v_proj', 'out_proj') for p in ('weight', 'bias'))
    assert keys(MultiheadAttention(8, 2, fused_qkv=True)) == [
        'proj.bias', 'proj.weight', 'qkv.bias', 'qkv.weight']
    assert keys(MultiheadAttention(8, 2, qkv_bias=False)) == [
        'k_proj.weight', 'out_proj.bias', 'out_proj.weight', 'q_proj.weight', 'v_proj.weight']
    assert keys(MultiheadAttention(8, 2, proj_names=('q', 'k', 'v', 'proj'))) == [
        'k.bias', 'k.weight', 'proj.bias', 'proj.weight', 'q.bias', 'q.weight', 'v.bias',
        'v.weight']


@pytest.mark.parametrize('heads', [1, 4])
def test_torch_layout_equals_nn_multihead_attention(heads):
    """``torch_layout=True``: nn.MultiheadAttention's state-dict keys (in order), its seeded
    initial weights, and its outputs and gradients with the weights of either loaded strictly
    into the other (SegViT's class-token self-attention, official keys)."""
    torch.manual_seed(0)
    ours = MultiheadAttention(24, heads, torch_layout=True)
    torch.manual_seed(0)
    ref = nn.MultiheadAttention(24, heads, batch_first=True)
    assert ours.fused_qkv and list(ours.state_dict()) == list(ref.state_dict()) == [
        'in_proj_weight', 'in_proj_bias', 'out_proj.weight', 'out_proj.bias']
    for key, value in ref.state_dict().items():  # the same draws under one seed
        assert torch.equal(ours.state_dict()[key], value), key
    for p in ref.parameters():  # non-zero biases, so a dropped bias shows
        nn.init.normal_(p, std=0.3)
    ours.load_state_dict(ref.state_dict(), strict=True)
    ours.eval()
    ref.eval()
    x = torch.randn(3, 7, 24)
    pad = torch.zeros(3, 7, dtype=torch.bool)
    pad[1, 4:] = True
    bias = torch.zeros(3, 1, 1, 7).masked_fill(pad[:, None, None], float('-inf'))
    with torch.no_grad():
        expected = ref(x, x, x, key_padding_mask=pad, need_weights=False)[0]
        torch.testing.assert_close(ours(x, bias=bias), expected, rtol=1e-5, atol=1e-5)
        out = ours(x, bias=bias, return_logits=True)[0]
        torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    ours(x).square().sum().backward()
    ref(x, x, x, need_weights=False)[0].square().sum().backward()
    for (name, p), (ref_name, p_ref) in zip(ours.named_parameters(), ref.named_parameters()):
        assert name == ref_name
        torch.testing.assert_close(p.grad, p_ref.grad, rtol=1e-4, atol=1e-5)
    ref.load_state_dict(ours.state_dict(), strict=True)  # and back
    assert sorted(MultiheadAttention(8, 2, qkv_bias=False, torch_layout=True).state_dict()) == [
        'in_proj_weight', 'out_proj.bias', 'out_proj.weight']


def test_attention_dropout_in_training_only():
    attn = MultiheadAttention(8, 2, attn_drop=0.5)
    x = torch.randn(1, 5, 8)
    attn.eval()
    with torch.no_grad():
        assert torch.equal(attn(x), attn(x))
        attn.train()
        torch.manual_seed(0)
        a = attn(x)
        torch.manual_seed(1)
        assert not torch.allclose(a, attn(x))


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match='not divisible'):
        MultiheadAttention(10, 4)
    with pytest.raises(ValueError, match=r'\(q, k, v, out\)'):
        MultiheadAttention(8, 2, proj_names=('qkv', 'proj'))
    with pytest.raises(ValueError, match='self-attention'):
        MultiheadAttention(8, 2, fused_qkv=True)(torch.randn(1, 3, 8), torch.randn(1, 4, 8))


def test_fast_path_option_selects_the_kernel(monkeypatch):
    """``fast_path=True``: bf16 CPU inference goes to the blocked kernel (while the switch is
    on); ``fast_path=False`` and the logits path never do."""
    from mmseg_ovseg.models.layers import fast_path as fp
    calls = []
    real = fp.blocked_attention
    monkeypatch.setattr(fp, 'blocked_attention',
                        lambda *a, **kw: calls.append(tuple(a[0].shape)) or real(*a, **kw))
    torch.manual_seed(0)
    fast = MultiheadAttention(16, 2, fused_qkv=True, fast_path=True).eval().bfloat16()
    plain = MultiheadAttention(16, 2, fused_qkv=True).eval().bfloat16()
    plain.load_state_dict(fast.state_dict())
    x = torch.randn(1, 9, 16, dtype=torch.bfloat16)
    with torch.no_grad(), fp.fast_path(True):
        ref = plain(x)
        assert calls == []
        out = fast(x)
        assert calls == [(1, 2, 9, 8)]
        fast(x, return_logits=True)
        with fp.fast_path(False):
            assert torch.equal(fast(x), ref)
    assert calls == [(1, 2, 9, 8)]
    torch.testing.assert_close(out.float(), ref.float(), atol=0.05, rtol=0.05)
