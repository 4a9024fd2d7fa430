"""Shared layers (``mmseg_ovseg.models.layers``) against the per-model code they replaced.

The ``_old_*`` references are the implementations as they stood in the model files before the
consolidation (issue 14), kept here verbatim as the specification of each call site.
"""
import pytest
import torch
import torch.nn.functional as F

from mmseg_ovseg.models.backbones.clip_resnet import resize_attnpool_pos_embed
from mmseg_ovseg.models.backbones.clip_vit import resize_clip_pos_embed
from mmseg_ovseg.models.decode_heads.side_adapter import SideAdapterViT
from mmseg_ovseg.models.layers import resize_pos_embed
from mmseg_ovseg.models.necks.query_upsampling import QueryUpsampling


# ----------------------------------------------------------------- former position resizers
def _old_clip_vit(pos_embed, src_hw, dst_hw, num_prefix=1, mode='bicubic'):
    # models/backbones/clip_vit.py: resize_clip_pos_embed
    if tuple(src_hw) == tuple(dst_hw):
        return pos_embed
    prefix, grid = pos_embed[:num_prefix], pos_embed[num_prefix:]
    grid = grid.reshape(1, src_hw[0], src_hw[1], -1).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=dst_hw, mode=mode, align_corners=False)
    grid = grid.permute(0, 2, 3, 1).reshape(dst_hw[0] * dst_hw[1], -1)
    return torch.cat([prefix, grid], dim=0)


def _old_attnpool(pos_embed, size, mode='bilinear'):
    # models/backbones/clip_resnet.py: resize_attnpool_pos_embed
    cls_pos, grid_pos = pos_embed[:1], pos_embed[1:]
    g = int(round(int(grid_pos.shape[0])**0.5))
    if tuple(size) == (g, g):
        return pos_embed
    channels = grid_pos.shape[1]
    grid_pos = grid_pos.reshape(1, g, g, channels).permute(0, 3, 1, 2)
    grid_pos = F.interpolate(grid_pos, size=size, mode=mode, align_corners=False)
    grid_pos = grid_pos.reshape(channels, -1).t()
    return torch.cat([cls_pos, grid_pos.to(cls_pos.dtype)], dim=0)


def _old_side_adapter(pos_embed, pos_grid, query_pos_embed, hw):
    # models/decode_heads/side_adapter.py: SideAdapterViT._pos_embed
    pos = pos_embed
    if tuple(hw) != pos_grid:
        pos = pos.reshape(1, *pos_grid, -1).permute(0, 3, 1, 2)
        pos = F.interpolate(pos, size=hw, mode='bicubic', align_corners=False)
        pos = pos.flatten(2).transpose(1, 2)
    return torch.cat([query_pos_embed, pos], dim=1)


def _old_grid_queries(weight, query_grid, hw):
    # models/necks/query_upsampling.py: QueryUpsampling.grid_queries
    q = weight
    if tuple(hw) == query_grid:
        return q
    grid = q.t().reshape(1, -1, *query_grid)
    grid = F.interpolate(grid, size=tuple(hw), mode='bicubic', align_corners=False)
    return grid[0].flatten(1).t()


def _same(new, old):
    """Bit-equal values, same shape and dtype."""
    assert new.dtype == old.dtype and new.shape == old.shape
    assert torch.equal(new, old), (new - old).abs().max()


GRIDS = [((4, 4), (4, 4)), ((4, 4), (6, 3)), ((5, 3), (2, 7)), ((4, 4), (9, 9))]
# (dtype of the table, autocast dtype or None)
PRECISIONS = [(torch.float32, None), (torch.float32, torch.bfloat16), (torch.bfloat16, None)]


@pytest.mark.parametrize('src,dst', GRIDS)
@pytest.mark.parametrize('mode', ['bicubic', 'bilinear'])
@pytest.mark.parametrize('dtype,amp', PRECISIONS)
def test_clip_vit_site(src, dst, mode, dtype, amp):
    pos = torch.randn(1 + src[0] * src[1], 8).to(dtype)
    with torch.autocast('cpu', dtype=amp or torch.bfloat16, enabled=amp is not None):
        old = _old_clip_vit(pos, src, dst, 1, mode)
        _same(resize_pos_embed(pos, src, dst, 1, mode), old)
        _same(resize_clip_pos_embed(pos, src, dst, 1, mode), old)
    if src == dst:
        assert resize_pos_embed(pos, src, dst, 1, mode) is pos


@pytest.mark.parametrize('side,dst', [(7, (7, 7)), (7, (3, 5)), (4, (8, 6))])
@pytest.mark.parametrize('mode', ['bilinear', 'bicubic'])
@pytest.mark.parametrize('dtype,amp', PRECISIONS)
def test_clip_resnet_site(side, dst, mode, dtype, amp):
    pos = torch.randn(1 + side * side, 16).to(dtype)
    with torch.autocast('cpu', dtype=amp or torch.bfloat16, enabled=amp is not None):
        old = _old_attnpool(pos, dst, mode)
        _same(resize_pos_embed(pos, None, dst, 1, mode), old)
        _same(resize_attnpool_pos_embed(pos, dst, mode), old)


@pytest.mark.parametrize('hw', [(4, 5), (7, 3), (2, 2)])
@pytest.mark.parametrize('amp', [False, True])
def test_side_adapter_site(hw, amp):
    torch.manual_seed(0)
    sa = SideAdapterViT(embed_dims=12, depth=1, num_heads=2, num_queries=3, pos_grid=(4, 5),
                        clip_channels=8, fusion_index=(0, ))
    with torch.no_grad():
        sa.pos_embed.normal_()
    with torch.autocast('cpu', dtype=torch.bfloat16, enabled=amp):
        old = _old_side_adapter(sa.pos_embed, sa.pos_grid, sa.query_pos_embed, hw)
        _same(sa._pos_embed(hw), old)
        _same(torch.cat([sa.query_pos_embed, resize_pos_embed(sa.pos_embed, sa.pos_grid, hw)],
                        dim=1), old)


@pytest.mark.parametrize('hw', [(4, 3), (9, 7), (2, 5)])
@pytest.mark.parametrize('amp', [False, True])
def test_query_upsampling_site(hw, amp):
    torch.manual_seed(0)
    neck = QueryUpsampling(in_channels=8, embed_dims=16, query_grid=(4, 3), num_layers=1,
                           num_heads=2)
    w = neck.queries.weight
    with torch.autocast('cpu', dtype=torch.bfloat16, enabled=amp):
        old = _old_grid_queries(w, neck.query_grid, hw)
        _same(neck.grid_queries(hw), old)
        _same(resize_pos_embed(w, neck.query_grid, hw), old)


def test_resize_pos_embed_errors():
    with pytest.raises(ValueError, match='grid rows, expected 5x5'):
        resize_pos_embed(torch.randn(1 + 16, 8), (5, 5), (6, 6), 1)
    with pytest.raises(ValueError, match='not a square grid'):
        resize_pos_embed(torch.randn(1 + 6, 8), None, (2, 2), 1)
    with pytest.raises(ValueError, match=r'\(N, D\) or \(1, N, D\)'):
        resize_pos_embed(torch.randn(2, 16, 8), (4, 4), (2, 2))


def test_resize_pos_embed_gradient():
    """The resize is differentiable (SAN and DenseCLIP train resized tables)."""
    pos = torch.randn(1 + 16, 4, requires_grad=True)
    resize_pos_embed(pos, (4, 4), (3, 5), 1).sum().backward()
    assert pos.grad is not None and pos.grad[0].eq(1).all()
