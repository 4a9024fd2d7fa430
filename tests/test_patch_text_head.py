import math

import pytest
import torch
import torch.nn.functional as F
from mmseg.registry import MODELS

import mmseg_ovseg  # noqa: F401


def _head(**kwargs):
    cfg = dict(type='PatchTextHead', in_channels=16, channels=8, num_classes=5,
               dropout_ratio=0.0)
    cfg.update(kwargs)
    return MODELS.build(cfg)


def test_logits_are_scaled_cosines():
    torch.manual_seed(0)
    head = _head(proj_type='conv')
    assert not hasattr(head, 'conv_seg')
    dense = torch.randn(2, 16, 3, 4)
    text = F.normalize(torch.randn(5, 8), dim=-1)
    logits = head(dict(feats=(torch.randn(2, 4, 3, 4), dense, torch.randn(2, 16)),
                       class_embeds=text))
    assert logits.shape == (2, 5, 3, 4)
    proj = F.normalize(head.proj(dense), dim=1)
    expected = (1 / 0.07) * torch.einsum('bdhw,cd->bchw', proj, text)
    torch.testing.assert_close(logits, expected)
    assert logits.abs().max() <= 1 / 0.07 + 1e-4  # bounded by the temperature


def test_identity_projection_and_fixed_scale():
    head = _head(in_channels=8, proj_type=None, learnable_logit_scale=False,
                 logit_scale_init=10.0)
    assert len(list(head.parameters())) == 0
    dense = torch.randn(1, 8, 2, 2)
    text = F.normalize(torch.randn(5, 8), dim=-1)
    logits = head(dict(feats=[dense, None], class_embeds=text))
    expected = 10.0 * torch.einsum('bdhw,cd->bchw', F.normalize(dense, dim=1), text)
    torch.testing.assert_close(logits, expected)


def test_learnable_scale_gets_gradient_and_is_clamped():
    head = _head(proj_type='mlp', logit_scale_init=1000.0)
    text = F.normalize(torch.randn(5, 8), dim=-1)
    logits = head(dict(feats=[torch.randn(1, 16, 2, 2), None], class_embeds=text))
    assert logits.abs().max() <= 100 + 1e-3
    head2 = _head(proj_type='mlp')
    head2(dict(feats=[torch.randn(1, 16, 2, 2), None], class_embeds=text)).sum().backward()
    assert head2.logit_scale.grad is not None
    assert math.isclose(head2.logit_scale.exp().item(), 1 / 0.07, rel_tol=1e-5)


def test_bad_inputs_raise_clear_errors():
    head = _head()
    text = F.normalize(torch.randn(5, 8), dim=-1)
    with pytest.raises(ValueError, match=r'PatchTextHead: feats\[-2\] must be'):
        head(dict(feats=[torch.randn(1, 12, 2, 2), None], class_embeds=text))
    with pytest.raises(ValueError, match='class_embeds must be'):
        head(dict(feats=[torch.randn(1, 16, 2, 2), None], class_embeds=torch.randn(5, 7)))
    with pytest.raises(ValueError, match='proj_type'):
        _head(proj_type='linear')
    with pytest.raises(ValueError, match='in_channels == channels'):
        _head(proj_type=None)
