"""ReSTR modules on their own: the fusion encoder and coarse-to-fine decoder (shapes, patch
logits, the decoder stage), the loss against a hand computation and the masked transformer
block against torch's TransformerEncoderLayer (split from test_restr.py; tests unchanged)."""
import math

import pytest
import torch
import torch.nn.functional as F

from mmseg_ovseg.models.decode_heads.restr_decoder import ReSTRCoarseToFineDecoder
from mmseg_ovseg.models.losses.restr_loss import ReSTRLoss, patch_targets
from test_restr import _fusion


def test_fusion_and_decoder_shapes_and_patch_logits():
    fusion = _fusion()
    x_v, x_l = torch.randn(2, 12, 3, 4), torch.randn(2, 5, 10)
    valid = torch.ones(2, 5, dtype=torch.bool)
    out = fusion(x_v, x_l, valid)
    assert out['visual'].shape == out['patches'].shape == (2, 16, 3, 4)
    assert out['patch_logits'].shape == (2, 1, 3, 4) and out['classifier'].shape == (2, 16)
    expected = (out['patches'] * out['classifier'][:, :, None, None]).sum(1, keepdim=True)
    torch.testing.assert_close(out['patch_logits'], expected)
    # the projected visual tokens are proj_v of the L2-normalised features
    v = fusion.proj_v(F.normalize(x_v.flatten(2).transpose(1, 2), dim=-1))
    torch.testing.assert_close(out['visual'], v.transpose(1, 2).reshape(2, 16, 3, 4))
    with pytest.raises(ValueError, match='x_v must be'):
        fusion(torch.randn(2, 11, 3, 4), x_l, valid)
    with pytest.raises(ValueError, match='valid must be'):
        fusion(x_v, x_l, valid[:, :4])

    dec = ReSTRCoarseToFineDecoder(in_channels=32, num_upsamples=4)
    assert [c.in_channels for c in dec.convs] == [32, 16, 8, 4]
    assert dec.cls.in_channels == 2 and all(c.kernel_size == (1, 1) for c in dec.convs)
    y = dec(torch.randn(2, 32, 3, 4))
    assert y.shape == (2, 1, 48, 64)
    # one stage = bilinear x2 with align_corners=True, 1x1 conv (no bias), LeakyReLU(0.01);
    # then the 1x1 classifier conv
    dec1 = ReSTRCoarseToFineDecoder(in_channels=8, num_upsamples=1)
    x = torch.randn(1, 8, 3, 4)
    up = F.interpolate(x, size=(6, 8), mode='bilinear', align_corners=True)
    expected = F.conv2d(F.leaky_relu(F.conv2d(up, dec1.convs[0].weight), 0.01), dec1.cls.weight)
    torch.testing.assert_close(dec1(x), expected)
    assert dec1.convs[0].bias is None and dec1.cls.bias is None
    with pytest.raises(ValueError, match='cannot be halved'):
        ReSTRCoarseToFineDecoder(in_channels=24, num_upsamples=4)


# ---------------------------------------------------------------- loss
def test_loss_against_hand_computation():
    gt = torch.tensor([[0, 0, 1, 0],
                       [0, 0, 0, 0],
                       [1, 1, 255, 255],
                       [1, 0, 255, 255]])[None]  # (1, 4, 4), patches 2x2
    # 'sum' > 0.8: any object pixel; 'fraction' > 0.5 of the valid pixels
    assert patch_targets(gt, 2).flatten().tolist() == [0, 1, 1, 0]
    assert patch_targets(gt, 2, 'fraction', 0.5).flatten().tolist() == [0, 0, 1, 0]
    pixel = torch.linspace(-2, 2, 16).reshape(1, 1, 4, 4)
    patch = torch.tensor([[[[0.5, -1.0], [2.0, 0.0]]]])
    losses = ReSTRLoss(patch_size=2)(pixel, patch, gt[:, None])

    def bce(z, t):
        return -(t * math.log(1 / (1 + math.exp(-z))) +
                 (1 - t) * math.log(1 - 1 / (1 + math.exp(-z))))

    pix = [bce(z, t) for z, t in zip(pixel.flatten().tolist(), gt.flatten().tolist())
           if t != 255]
    assert len(pix) == 12
    assert losses['loss_pixel'].item() == pytest.approx(sum(pix) / 12, rel=1e-6)
    pat = [bce(0.5, 0), bce(-1.0, 1), bce(2.0, 1), bce(0.0, 0)]
    assert losses['loss_patch'].item() == pytest.approx(0.1 * sum(pat) / 4, rel=1e-6)
    # pixel logits at another size are resized (bilinear, align_corners=True) first
    small = torch.randn(1, 1, 2, 2)
    a = ReSTRLoss(patch_size=2)(small, patch, gt[:, None])['loss_pixel']
    b = ReSTRLoss(patch_size=2)(F.interpolate(small, size=(4, 4), mode='bilinear',
                                              align_corners=True), patch, gt[:, None])
    torch.testing.assert_close(a, b['loss_pixel'])
    with pytest.raises(ValueError, match='patch grid'):
        ReSTRLoss(patch_size=2)(pixel, torch.zeros(1, 1, 3, 3), gt[:, None])
    with pytest.raises(ValueError, match='patch_target_mode'):
        ReSTRLoss(patch_target_mode='area')


@pytest.mark.parametrize('pre_norm', [True, False])
def test_masked_block_equals_torch_encoder_layer(pre_norm):
    """Pre-norm (fusion) and post-norm (language) blocks = torch's TransformerEncoderLayer
    (GELU, no dropout) with a key-padding mask; positions are the sinusoidal encodings."""
    from mmseg_ovseg.models.layers import (
        MaskedTransformerBlock,
        padding_bias,
        sinusoidal_positions,
    )
    blk = MaskedTransformerBlock(8, 2, 16, pre_norm=pre_norm)
    ref = torch.nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, activation='gelu',
                                           batch_first=True, norm_first=pre_norm)
    with torch.no_grad():
        for p in blk.parameters():
            p.normal_(0, 0.3)
        ref.self_attn.in_proj_weight.copy_(blk.attn.qkv.weight)
        ref.self_attn.in_proj_bias.copy_(blk.attn.qkv.bias)
        ref.self_attn.out_proj.weight.copy_(blk.attn.proj.weight)
        ref.self_attn.out_proj.bias.copy_(blk.attn.proj.bias)
        for a, b in (('linear1', 'fc1'), ('linear2', 'fc2'), ('norm1', 'norm1'),
                     ('norm2', 'norm2')):
            getattr(ref, a).load_state_dict(getattr(blk, b).state_dict())
    ref.train()  # the reference's slow path (no nested-tensor fast path)
    x = torch.randn(2, 5, 8)
    valid = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    with torch.no_grad():
        out, expected = blk(x, valid), ref(x, src_key_padding_mask=~valid)
    torch.testing.assert_close(out[valid], expected[valid], rtol=1e-5, atol=1e-5)
    # a stack builds the additive bias once and passes it to every block
    with torch.no_grad():
        assert torch.equal(blk(x, bias=padding_bias(valid, x.dtype)), out)
    with pytest.raises(ValueError, match='not both'):
        blk(x, valid, bias=padding_bias(valid, x.dtype))
    pe = sinusoidal_positions(3, 4)
    assert pe[2].tolist() == pytest.approx([math.sin(2), math.cos(2), math.sin(2 / 100),
                                            math.cos(2 / 100)])
