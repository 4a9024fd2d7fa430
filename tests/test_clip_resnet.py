"""CLIPResNetWithAttention: parity with open_clip, dense pooling, loading, freezing."""
import pytest
import torch
import torch.nn.functional as F

from mmseg_ovseg.clip.builder import create_clip
from mmseg_ovseg.models.backbones.clip_resnet import (
    CLIPResNetWithAttention,
    resize_attnpool_pos_embed,
)


def initialized(module):
    """``module`` after ``init_weights()``: CLIP towers read ``pretrained`` there
    (mmengine's convention), not at construction."""
    module.init_weights()
    return module


# Native input 64 -> 2x2 attnpool grid; embed 8*32 = 256 channels, 8 heads of 32.
TINY = dict(
    embed_dim=32,
    vision_cfg=dict(image_size=64, layers=[1, 1, 1, 1], width=8, head_width=32),
    text_cfg=dict(context_length=77, vocab_size=49408, width=32, heads=2, layers=1))


def _randomize_bn(module):
    # Non-trivial BN statistics and bn3 weights (open_clip zero-inits bn3) so every
    # stage contributes to the outputs.
    g = torch.Generator().manual_seed(1)
    for m in module.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)


def _tiny(**kwargs):
    torch.manual_seed(0)
    model = CLIPResNetWithAttention(clip_model=TINY, **kwargs)
    _randomize_bn(model)
    return model.eval()


@pytest.mark.slow
def test_parity_with_open_clip_at_native_size():
    model = _tiny()
    ref = model.visual  # open_clip's own forward on the very same weights
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        c2, c3, c4, c5, dense, glob = model(x)
        feats = ref.layer4(ref.layer3(ref.layer2(ref.layer1(ref.stem(x)))))
        ref_global = ref(x)
    assert [t.shape[1] for t in (c2, c3, c4, c5)] == [32, 64, 128, 256]
    assert [t.shape[-1] for t in (c2, c3, c4, c5)] == [16, 8, 4, 2]
    torch.testing.assert_close(c5, feats, rtol=0, atol=1e-6)
    assert glob.shape == (2, 32) and dense.shape == (2, 32, 2, 2)
    torch.testing.assert_close(glob, ref_global, rtol=0, atol=1e-5)


def test_dense_is_full_attention_per_position():
    """Each dense position is the pool's output for that position as a query (DenseCLIP)."""
    model = _tiny()
    pool = model.visual.attnpool
    x = torch.randn(1, 3, 96, 128)
    with torch.no_grad():
        *_, c5, dense, glob = model(x)
        # Independent reference: explicit per-head softmax attention.
        B, C, h, w = c5.shape
        tok = c5.flatten(2).transpose(1, 2)  # (B, hw, C)
        tok = torch.cat([tok.mean(1, keepdim=True), tok], 1)
        tok = tok + resize_attnpool_pos_embed(pool.positional_embedding, (h, w))
        nh = pool.num_heads

        def heads(t):
            return t.reshape(B, -1, nh, C // nh).transpose(1, 2)

        q, k, v = heads(pool.q_proj(tok)), heads(pool.k_proj(tok)), heads(pool.v_proj(tok))
        attn = (q @ k.transpose(-1, -2) / (C // nh)**0.5).softmax(-1)
        out = pool.c_proj((attn @ v).transpose(1, 2).reshape(B, -1, C))
        value_only = pool.c_proj(pool.v_proj(tok))
    assert dense.shape == (1, 32, 3, 4) and glob.shape == (1, 32)
    torch.testing.assert_close(glob, out[:, 0], rtol=0, atol=1e-5)
    torch.testing.assert_close(dense, out[:, 1:].transpose(1, 2).reshape(1, 32, 3, 4),
                               rtol=0, atol=1e-5)
    # Not the value-only (MaskCLIP) shortcut.
    assert not torch.allclose(dense.flatten(2).transpose(1, 2), value_only[:, 1:], atol=1e-3)


def test_pos_embed_resize():
    pos = torch.randn(1 + 7 * 7, 16)
    assert torch.equal(resize_attnpool_pos_embed(pos, (7, 7)), pos)
    big = resize_attnpool_pos_embed(pos, (3, 5))
    assert big.shape == (1 + 15, 16)
    assert torch.equal(big[0], pos[0])
    grid = pos[1:].reshape(1, 7, 7, 16).permute(0, 3, 1, 2)
    ref = F.interpolate(grid, size=(3, 5), mode='bilinear', align_corners=False)
    torch.testing.assert_close(big[1:], ref.flatten(2)[0].t())
    with pytest.raises(ValueError):
        resize_attnpool_pos_embed(torch.randn(1 + 6, 16), (2, 2))


def test_out_indices_and_no_attnpool():
    model = _tiny(out_indices=(1, 3), output_attnpool=False)
    outs = model(torch.randn(1, 3, 64, 96))
    assert [tuple(o.shape) for o in outs] == [(1, 64, 8, 12), (1, 256, 2, 3)]
    with pytest.raises(ValueError):
        CLIPResNetWithAttention(clip_model=TINY, out_indices=(4, ))
    vit = dict(TINY, vision_cfg=dict(image_size=32, layers=1, width=32, patch_size=16))
    with pytest.raises(ValueError, match='CLIP ResNet'):
        CLIPResNetWithAttention(clip_model=vit)


@pytest.mark.slow
def test_load_clip_checkpoint(tmp_path):
    torch.manual_seed(3)
    clip = create_clip(TINY).eval()
    _randomize_bn(clip.visual)
    path = tmp_path / 'tiny_clip.pt'
    torch.save(clip.state_dict(), path)

    model = initialized(CLIPResNetWithAttention(clip_model=TINY, pretrained=str(path))).eval()
    assert set(model.state_dict()) == {k for k in clip.state_dict() if k.startswith('visual.')}
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        glob = model(x)[-1]
        torch.testing.assert_close(glob, clip.encode_image(x), rtol=0, atol=1e-5)
        torch.testing.assert_close(model.visual.attnpool.positional_embedding,
                                   clip.visual.attnpool.positional_embedding, rtol=0, atol=0)

    other = dict(TINY, vision_cfg=dict(TINY['vision_cfg'], layers=[1, 2, 1, 1]))
    other_path = tmp_path / 'other_clip.pt'
    torch.save(create_clip(other).state_dict(), other_path)
    with pytest.raises(ValueError, match='unexpected keys'):
        initialized(CLIPResNetWithAttention(clip_model=TINY, pretrained=str(other_path)))
    with pytest.raises(FileNotFoundError):
        initialized(CLIPResNetWithAttention(clip_model=TINY,
                                            pretrained=str(tmp_path / 'missing.pt')))


def test_input_resolution_resizes_pos_grid_at_load(tmp_path):
    """DenseCLIP's input_resolution: grid resized once at load (bilinear), then per input."""
    torch.manual_seed(4)
    clip = create_clip(TINY)
    path = tmp_path / 'tiny_clip.pt'
    torch.save(clip.state_dict(), path)
    model = initialized(CLIPResNetWithAttention(clip_model=TINY, pretrained=str(path),
                                                input_resolution=128))
    pos = model.visual.attnpool.positional_embedding
    assert pos.shape == (1 + 4 * 4, 256)
    expected = resize_attnpool_pos_embed(clip.visual.attnpool.positional_embedding, (4, 4))
    torch.testing.assert_close(pos.detach(), expected.detach(), rtol=0, atol=0)
    with torch.no_grad():
        assert model.eval()(torch.randn(1, 3, 96, 64))[-2].shape == (1, 32, 3, 2)


@pytest.mark.slow
def test_frozen_flags():
    model = _tiny(frozen_stages=2).train()
    v = model.visual
    assert not any(p.requires_grad for p in v.conv1.parameters())
    assert not any(p.requires_grad for p in v.layer2.parameters())
    assert all(p.requires_grad for p in v.layer3.parameters())
    assert all(p.requires_grad for p in v.attnpool.parameters())
    assert not v.bn1.training and not v.layer2[0].bn1.training and v.layer3[0].bn1.training
    # Frozen BN statistics stay put in a training step; trainable ones move.
    frozen_mean = v.layer1[0].bn1.running_mean.clone()
    free_mean = v.layer3[0].bn1.running_mean.clone()
    model(torch.randn(2, 3, 64, 64))[-1][1].sum().backward()
    assert torch.equal(v.layer1[0].bn1.running_mean, frozen_mean)
    assert not torch.equal(v.layer3[0].bn1.running_mean, free_mean)
    assert v.layer2[0].conv1.weight.grad is None and v.layer3[0].conv1.weight.grad is not None

    model = _tiny(frozen=True).train()
    assert not any(p.requires_grad for p in model.parameters())
    assert not any(m.training for m in model.visual.modules())
    with pytest.raises(ValueError):
        CLIPResNetWithAttention(clip_model=TINY, frozen_stages=5)


def test_registry_build():
    from mmseg.registry import MODELS

    import mmseg_ovseg  # noqa: F401  (registers the module)
    model = MODELS.build(
        dict(type='CLIPResNetWithAttention', clip_model=TINY, out_indices=(0, 1, 2, 3)))
    assert isinstance(model, CLIPResNetWithAttention)
    outs = model.eval()(torch.randn(1, 3, 64, 64))
    assert len(outs) == 6 and outs[-2].shape == (1, 32, 2, 2)
