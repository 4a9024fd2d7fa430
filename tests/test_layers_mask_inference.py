"""``semantic_inference`` (``mmseg_ovseg.models.layers.mask_inference``) against the SAN Eq. 4
and ATM inference code it replaced: the ``_old_*`` references are those implementations as they
stood in the model files before the consolidation (issue 14); default size, inf logits and the
traced path (split from test_layers.py; tests unchanged)."""
import pytest
import torch
import torch.nn.functional as F

from mmseg_ovseg.models.layers.fast_path import fast_path
from mmseg_ovseg.models.layers.mask_inference import semantic_inference


# ----------------------------------------------------------------- mask-classification inference
def _old_san_eq4(mask_logits, cls_logits, height, width):
    # models/decode_heads/san_head.py: SANHead.predict_by_feat (banded Eq. 4)
    b, q, h, w = mask_logits.shape
    n_cls = cls_logits.shape[-1] - 1
    device_type = mask_logits.device.type
    low = torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(
        device_type) else None

    def interp(size_in, size_out, like):
        eye = torch.eye(size_in, dtype=like.dtype, device=like.device)
        return F.interpolate(eye[None], size=size_out, mode='linear', align_corners=False)[0].t()

    with torch.autocast(device_type, enabled=False):
        mask_logits = mask_logits.float()
        cls = cls_logits.float().softmax(dim=-1)[..., :-1]
        c_pad = -(-n_cls // 16) * 16
        if c_pad != n_cls:
            cls = F.pad(cls, (0, c_pad - n_cls))
        if low is not None:
            cls = cls.to(low)
        ry = interp(h, height, mask_logits)
        rx_t = interp(w, width, mask_logits).t()
        bands = []
        for y0 in range(0, height, 32):
            y1 = min(height, y0 + 32)
            src = ry[y0:y1].any(dim=0).nonzero()
            bands.append((y0, y1, int(src[0]), int(src[-1]) + 1))
        out = cls.new_empty((b, height, width, c_pad))
        for i in range(b):
            wide = torch.matmul(mask_logits[i], rx_t)
            for y0, y1, c0, c1 in bands:
                tile = torch.matmul(ry[y0:y1, c0:c1], wide[:, c0:c1]).sigmoid_()
                tile = tile.view(q, -1).t()
                if low is not None:
                    tile = tile.to(low)
                torch.mm(tile, cls[i], out=out[i, y0:y1].view(tile.shape[0], c_pad))
    return out[..., :n_cls].permute(0, 3, 1, 2)


def _old_atm(cls_logits, mask_logits, size, align_corners=False):
    # models/decode_heads/atm_head.py: ATMHead.predict_by_feat + atm.semantic_inference
    mask_logits = F.interpolate(mask_logits.float(), size=size, mode='bilinear',
                                align_corners=align_corners)
    prob = F.softmax(cls_logits.float(), dim=-1)[..., :-1]
    return torch.einsum('bqc,bqhw->bchw', prob, mask_logits.sigmoid())


def _close(new, old, tol=1e-6):
    assert new.shape == old.shape and new.dtype == old.dtype
    diff = (new.float() - old.float()).abs().max().item()
    assert diff <= tol, diff
    assert torch.equal(new.argmax(1), old.argmax(1))
    return diff


# (Q, h, w, C+1, output size): SAN's x16 grids, a non-integer scale, C = 171 (padded to 176),
# an unchanged size, a change along one axis only, a band boundary inside the output.
INFERENCE_CASES = [(5, 7, 9, 4, (112, 144)), (5, 7, 9, 4, (100, 130)), (8, 4, 4, 172, (64, 64)),
                   (6, 6, 5, 3, (6, 5)), (6, 6, 5, 3, (6, 40)), (3, 9, 2, 21, (70, 2))]


@pytest.mark.parametrize('q,h,w,c,size', INFERENCE_CASES)
@fast_path(True)  # the banded path, whatever OVSEG_FAST_PATH says (off: test_fast_path)
def test_semantic_inference_equals_former_san(q, h, w, c, size):
    torch.manual_seed(0)
    masks, cls = torch.randn(2, q, h, w) * 4, torch.randn(2, q, c) * 3
    _close(semantic_inference(cls, masks, size), _old_san_eq4(masks, cls, *size), tol=0)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        new, old = semantic_inference(cls, masks, size), _old_san_eq4(masks, cls, *size)
    assert new.dtype == torch.bfloat16
    assert torch.equal(new, old)


@pytest.mark.parametrize('q,h,w,c,size', INFERENCE_CASES)
@pytest.mark.parametrize('align_corners', [False, True])
def test_semantic_inference_equals_former_atm(q, h, w, c, size, align_corners):
    torch.manual_seed(1)
    masks, cls = torch.randn(2, q, h, w) * 4, torch.randn(2, q, c) * 3
    new = semantic_inference(cls, masks, size, align_corners=align_corners)
    _close(new, _old_atm(cls, masks, size, align_corners))
    assert new.min() >= 0


def test_semantic_inference_default_size_and_inf():
    """No size: the masks' own grid, without a resize (so -inf logits give 0, not NaN)."""
    masks, cls = torch.randn(1, 4, 3, 5), torch.randn(1, 4, 6)
    masks[0, 1, 2, 2] = -float('inf')
    out = semantic_inference(cls, masks)
    expected = sum(cls.softmax(-1)[:, i, :-1, None, None] * masks[:, i, None].sigmoid()
                   for i in range(4))
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, expected)


def test_semantic_inference_traced_is_the_plain_math():
    """Under a tracer (FLOP counting, export) the scores are the plain F.interpolate + einsum
    (the former ATM computation, so the documented FLOP counts hold) and equal the eager ones."""
    from mmengine.analysis import FlopAnalyzer

    class Rule(torch.nn.Module):

        def __init__(self, fn):
            super().__init__()
            self.fn = fn

        def forward(self, cls, masks):
            return self.fn(cls, masks, (40, 24))

    torch.manual_seed(2)
    cls, masks = torch.randn(1, 6, 8), torch.randn(1, 6, 5, 3) * 4
    eager = semantic_inference(cls, masks, (40, 24))
    traced = torch.jit.trace(Rule(semantic_inference), (cls, masks))
    _close(traced(cls, masks), eager)
    flops = [FlopAnalyzer(Rule(fn), (cls, masks)).total() for fn in (semantic_inference, _old_atm)]
    # the class product (B Q C H W) and mmengine's 4 per upsampled mask value (B Q H W)
    assert flops[0] == flops[1] == 6 * 7 * 40 * 24 + 4 * 6 * 40 * 24
