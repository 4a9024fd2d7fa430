"""layers.fast_path: one switch for the CPU inference fast paths; on and off agree."""
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

import mmseg_ovseg.models.layers.fast_path as fp
import mmseg_ovseg.models.layers.mask_inference as mi
from mmseg_ovseg.clip.builder import create_clip
from mmseg_ovseg.models.backbones.clip_vit import CLIPVisionTransformer
from mmseg_ovseg.models.decode_heads import atm_head, san_head
from mmseg_ovseg.models.decode_heads.side_adapter import SideAdapterBlock
from mmseg_ovseg.models.layers import WeightCache, sdpa, set_fast_path, use_fast_path
from mmseg_ovseg.models.segmentors.dense_inference import argmax_classes
from test_clip_vit import TINY  # the tiny CLIP config of the backbone tests


@pytest.fixture(scope='module')
def backbone():
    torch.manual_seed(0)
    clip = create_clip(TINY)
    bb = CLIPVisionTransformer(TINY, output_dense=True, out_indices=(1, 2)).eval()
    bb.load_state_dict({k: v for k, v in clip.state_dict().items() if k.startswith('visual.')})
    with torch.no_grad():  # non-zero biases, so that a wrongly scaled bias shows
        for name, p in bb.visual.transformer.named_parameters():
            if name.endswith('bias'):
                p.normal_(0, 0.5)
    return bb


@pytest.fixture(autouse=True)
def fast_path_on():
    """Each test starts with the fast path on, whatever OVSEG_FAST_PATH says."""
    with fp.fast_path(True):
        yield


@pytest.fixture
def blocked_calls(monkeypatch):
    """Shapes of the queries each call of the blocked attention kernel got."""
    calls = []
    real = fp.blocked_attention
    monkeypatch.setattr(fp, 'blocked_attention',
                        lambda q, *a, **kw: calls.append(tuple(q.shape)) or real(q, *a, **kw))
    return calls


@pytest.fixture
def onednn_calls(monkeypatch):
    """Counts calls of oneDNN's prepacked linear op."""
    calls = []
    if fp.ONEDNN_LINEAR:
        real = torch.ops.mkldnn._linear_pointwise
        monkeypatch.setattr(torch.ops.mkldnn, '_linear_pointwise',
                            lambda *a: calls.append(1) or real(*a))
    return calls


def _run(bb, x, bias, enabled, autocast=False):
    """Backbone outputs and SAN's SLS tokens with the fast path on or off, fresh caches."""
    bb.clear_cast_cache()
    with fp.fast_path(enabled), torch.no_grad(), \
            torch.autocast('cpu', dtype=torch.bfloat16, enabled=autocast):
        outs = bb(x)
        tokens, _ = bb.embed(x)
        sls = bb.forward_sls(tokens, bias, 1)[0]
        sls_last = bb.forward_sls(tokens, bias, 1, return_visual=False)[0]
    return [o.float() for o in (*outs, sls, sls_last)]


def test_switch_api_and_env_parsing(monkeypatch):
    with fp.fast_path(False):
        assert not use_fast_path()
        with fp.fast_path(True):
            assert use_fast_path()
        assert not use_fast_path()
    assert use_fast_path()
    with pytest.raises(RuntimeError), fp.fast_path(False):
        raise RuntimeError  # restored on errors too
    assert use_fast_path()
    set_fast_path(False)
    assert not use_fast_path()
    set_fast_path(True)
    for value, expected in [('0', False), ('off', False), ('False', False), ('1', True),
                            ('on', True), (' yes ', True)]:
        monkeypatch.setenv(fp.ENV_VAR, value)
        assert fp._env_switch() is expected
    monkeypatch.setenv(fp.ENV_VAR, 'fast')
    with pytest.raises(ValueError, match="OVSEG_FAST_PATH='fast'"):
        fp._env_switch()
    monkeypatch.delenv(fp.ENV_VAR)
    assert fp._env_switch() is True


def test_float32_on_equals_off_and_switch_changes_the_path(backbone, blocked_calls,
                                                           onednn_calls):
    x = torch.randn(2, 3, 64, 80)
    bias = torch.randn(2, backbone.num_heads, 3, 4 * 5)
    fast = _run(backbone, x, bias, True)
    kinds, n_onednn = {key[0] for key in backbone._cast_cache}, len(onednn_calls)
    plain = _run(backbone, x, bias, False)
    assert not backbone._cast_cache  # off: F.linear on the parameters, nothing cached
    assert len(onednn_calls) == n_onednn
    assert blocked_calls == []  # float32 never takes the blocked bf16 kernel
    for a, b in zip(fast, plain):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    if fp.ONEDNN_LINEAR:  # on: every block linear ran on a reordered oneDNN weight
        assert kinds == {'onednn'}
        # 4 linears per block: 3 blocks of the forward, 2 + 2 of the SLS runs; the last block
        # without visual output projects the visual keys/values apart: one more
        assert n_onednn == 4 * (3 + 2 + 2) + 1


def test_bfloat16_on_close_to_off_and_switch_changes_the_path(backbone, blocked_calls):
    x = torch.randn(1, 3, 64, 64)
    bias = torch.randn(1, backbone.num_heads, 3, 16)
    fast = _run(backbone, x, bias, True, autocast=True)
    n_cached, n_blocked = len(backbone._cast_cache), len(blocked_calls)
    plain = _run(backbone, x, bias, False, autocast=True)
    # on: cached bf16 copies (8 per block + patch embedding + proj) and the blocked kernel in
    # every block of the plain forward and of both SLS runs
    assert n_cached == 3 * 8 + 2
    assert n_blocked == 3 + 2 * 2 + (2 + 1)  # last SLS block without visual rows: one call
    # off: autocast's own casts and PyTorch's attention
    assert not backbone._cast_cache and len(blocked_calls) == n_blocked
    ref = _run(backbone, x, bias, False)
    for a, b, r in zip(fast, plain, ref):
        scale = r.abs().max()
        # the tolerance of test_clip_vit's autocast test: 5% of the largest float32 value
        assert (a - b).abs().max() < 0.05 * scale
        assert (a - r).abs().max() < 0.05 * scale


def test_side_adapter_attention_obeys_the_switch(blocked_calls):
    torch.manual_seed(0)
    blk = SideAdapterBlock(48, 6).eval()
    x = torch.randn(1, 70, 48)
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):
        on = blk(x)
        assert blocked_calls == [(1, 6, 70, 8)]
        with fp.fast_path(False):
            off = blk(x)
    assert len(blocked_calls) == 1
    torch.testing.assert_close(on.float(), off.float(), atol=0.1, rtol=0.05)


def test_sdpa_off_is_pytorch_attention():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, 40, 8, generator=g).bfloat16() for _ in range(3))
    mask = torch.randn(1, 2, 40, 40, generator=g)
    with torch.no_grad():
        assert fp.uses_blocked_attention(q, k, v)
        with fp.fast_path(False):
            assert not fp.uses_blocked_attention(q, k, v)
            assert torch.equal(sdpa(q, k, v, mask),
                               F.scaled_dot_product_attention(q, k, v, attn_mask=mask))


@pytest.mark.parametrize('rows', [None, slice(8, None)])
def test_weight_cache_linear_scales_rows_and_follows_updates(rows):
    g = torch.Generator().manual_seed(0)
    w, b = torch.randn(24, 16, generator=g), torch.randn(24, generator=g)
    x = torch.randn(3, 5, 16, generator=g)
    cache = WeightCache()
    sl = slice(None) if rows is None else rows
    with torch.no_grad():
        out = cache.linear(x, w, b, 2.0, 0.5, rows=rows)
        ref = F.linear(x, 2.0 * w[sl], 0.5 * b[sl])
        torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
        assert len(cache) == (1 if fp.ONEDNN_LINEAR else 0)
        w.mul_(3)  # in place: the cached copy is rebuilt
        torch.testing.assert_close(cache.linear(x, w, b, 2.0, 0.5, rows=rows),
                                   F.linear(x, 2.0 * w[sl], 0.5 * b[sl]), atol=1e-5, rtol=1e-5)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            low = cache.linear(x, w, b, rows=rows)
        assert low.dtype == torch.bfloat16 and len(cache) == (3 if fp.ONEDNN_LINEAR else 2)
    # gradients: the parameter itself, no copy
    wg = w.clone().requires_grad_()
    cache.clear()
    cache.linear(x, wg, b, rows=rows).sum().backward()
    assert len(cache) == 0 and wg.grad.abs().sum() > 0


@pytest.fixture
def banded_calls(monkeypatch):
    """Output sizes of each call of the row-banded Eq. 4."""
    calls = []
    real = mi._banded_inference

    def spy(cls, masks, size, *args):
        calls.append(size)
        return real(cls, masks, size, *args)

    monkeypatch.setattr(mi, '_banded_inference', spy)
    return calls


def _mask_heads():
    """Tiny SAN and SegViT heads (their ``predict_by_feat`` needs no weights)."""
    san = san_head.SANHead(num_classes=3, side_adapter=dict(
        embed_dims=16, depth=4, num_heads=2, patch_size=8, num_queries=3, pos_grid=(2, 2),
        clip_channels=8, fusion_index=(0, ), mlp_ratio=2),
        mask_decoder=dict(embed_channels=8, mlp_channels=8),
        bias_decoder=dict(num_heads=2, embed_channels=8, mlp_channels=8), text_channels=8,
        deep_supervision_idxs=(1, ))
    atm = atm_head.ATMHead(in_channels=16, num_classes=3, embed_dims=16, num_layers=1,
                           num_heads=2, use_stages=1, align_corners=True)
    return san, atm


# (Q, h, w, C+1, output size): x16 upsampling, a non-integer scale, C = 171 (padded to 176 on
# the fast path), an unchanged size, one axis only
EQ4_CASES = [(5, 7, 9, 4, (112, 144)), (5, 7, 9, 4, (100, 130)), (8, 4, 4, 172, (64, 64)),
             (6, 6, 5, 3, (6, 5)), (6, 6, 5, 3, (6, 40))]


@pytest.mark.parametrize('q,h,w,c,size', EQ4_CASES)
@pytest.mark.parametrize('align_corners', [False, True])
def test_eq4_on_equals_plain_math_off_and_switch_changes_the_path(q, h, w, c, size,
                                                                   align_corners, banded_calls):
    torch.manual_seed(0)
    masks, cls = torch.randn(2, q, h, w) * 4, torch.randn(2, q, c) * 3
    on = mi.semantic_inference(cls, masks, size, align_corners)
    assert banded_calls == [size]
    with fp.fast_path(False):
        off = mi.semantic_inference(cls, masks, size, align_corners)
    assert banded_calls == [size]  # off: the plain math, written out here
    up = F.interpolate(masks, size=size, mode='bilinear', align_corners=align_corners)
    plain = torch.einsum('bqc,bqhw->bchw', cls.softmax(-1)[..., :-1], up.sigmoid())
    assert torch.equal(off, plain)
    assert on.shape == off.shape == (2, c - 1) + size and on.dtype == off.dtype == torch.float32
    assert (on - off).abs().max() <= 1e-6
    assert torch.equal(on.argmax(1), off.argmax(1))
    with torch.autocast('cpu', dtype=torch.bfloat16):
        on16 = mi.semantic_inference(cls, masks, size, align_corners)
        with fp.fast_path(False):
            off16 = mi.semantic_inference(cls, masks, size, align_corners)
    assert len(banded_calls) == 2
    assert on16.dtype == off16.dtype == torch.bfloat16
    # off: float32 math rounded once; on: the class product in bf16 (bf16 rounding)
    assert torch.equal(off16, plain.bfloat16())
    assert (on16.float() - plain).abs().max() <= 0.02 * plain.abs().max()


def test_san_and_segvit_heads_share_the_one_semantic_inference(banded_calls):
    """Both heads infer through ``layers.semantic_inference`` (banded on, plain off)."""
    san, atm = _mask_heads()
    assert san_head.semantic_inference is atm_head.semantic_inference is mi.semantic_inference
    torch.manual_seed(0)
    cls, masks = torch.randn(1, 3, 4), torch.randn(1, 3, 5, 6) * 4
    metas = [dict(img_shape=(40, 48), pad_shape=(40, 48))]
    for head, corners in ((san, False), (atm, True)):
        on = head.predict_by_feat((cls, masks), metas)
        with fp.fast_path(False):
            off = head.predict_by_feat((cls, masks), metas)
        expected = mi.semantic_inference(cls, masks, (40, 48), align_corners=corners)
        assert torch.equal(on, expected)
        torch.testing.assert_close(on, off, atol=1e-6, rtol=1e-6)
    assert banded_calls == [(40, 48)] * 4  # each head's fast call and the reference's


def test_integer_argmax_on_equals_float_argmax_off_ties_included():
    """Labels identical on and off: non-negative scores with many exact ties and zeros (the
    first maximal class wins on both paths), float32 and bfloat16."""
    g = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 4, (7, 30, 40), generator=g) / 4  # values 0, .25, .5, .75
    scores[:, :5] = 0.0  # every class tied at zero
    for dtype in (torch.float32, torch.bfloat16):
        x = scores.to(dtype)
        on = argmax_classes(x, nonnegative=True)
        with fp.fast_path(False):
            off = argmax_classes(x, nonnegative=True)
        assert torch.equal(on, off) and torch.equal(off, x.argmax(dim=0, keepdim=True))
        assert (on[0, :5] == 0).all()
    # the path changes: outside its precondition (scores >= 0) the integer argmax orders
    # negative floats backwards (bits(-2.0) > bits(-1.0) as int32), and -0.0 below +0.0
    for values, fast in (([-2.0, -1.0], 0), ([-0.0, 0.0], 1)):
        x = torch.tensor(values).view(2, 1, 1)
        assert int(argmax_classes(x, nonnegative=True)) == fast
        with fp.fast_path(False):
            assert int(argmax_classes(x, nonnegative=True)) == int(x.argmax(dim=0)) == 1 - fast
        assert int(argmax_classes(x)) == 1 - fast  # not flagged non-negative: float argmax


@pytest.mark.slow
def test_env_var_is_read_at_import():
    code = ('import mmseg_ovseg.models.layers.fast_path as fp; '
            'print(fp.use_fast_path())')
    env = dict(os.environ, OVSEG_FAST_PATH='0')
    out = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == 'False'
