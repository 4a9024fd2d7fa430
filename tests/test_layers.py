"""Shared layers (``mmseg_ovseg.models.layers``) against the per-model code they replaced.

The ``_old_*`` references are the implementations as they stood in the model files before the
consolidation (issue 14), kept here verbatim as the specification of each call site.
Mask-classification inference: test_layers_mask_inference.py.
"""
import pytest
import torch
import torch.nn.functional as F

from mmseg_ovseg.models.backbones.clip_resnet import resize_attnpool_pos_embed
from mmseg_ovseg.models.backbones.clip_vit import resize_clip_pos_embed
from mmseg_ovseg.models.decode_heads.side_adapter import SideAdapterViT
from mmseg_ovseg.models.layers import MLP, LayerNorm2d, resize_pos_embed, trunc_normal_init_weights
from mmseg_ovseg.models.layers.init import TRUNC_NORMAL_SAMPLERS
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


# ----------------------------------------------------------------- LayerNorm2d, MLP
def test_layer_norm_2d():
    """Channel LayerNorm of a map == ``F.layer_norm`` over the channel axis per pixel."""
    norm = LayerNorm2d(6, eps=1e-6)
    with torch.no_grad():
        norm.weight.normal_()
        norm.bias.normal_()
    x = torch.randn(2, 6, 3, 5)
    ref = F.layer_norm(x.permute(0, 2, 3, 1), (6, ), norm.weight, norm.bias, 1e-6)
    torch.testing.assert_close(norm(x), ref.permute(0, 3, 1, 2))
    assert list(norm.state_dict()) == ['weight', 'bias']


@pytest.mark.parametrize('dense', [False, True])
def test_mlp(dense):
    """Affine layers with ReLU between them (not after the last); checkpoint keys
    ``layers.{i}.{weight,bias}``, 1x1-conv weights when dense."""
    mlp = MLP(4, 8, 3, num_layers=3, dense=dense)
    assert list(mlp.state_dict()) == [f'layers.{i}.{n}' for i in range(3)
                                      for n in ('weight', 'bias')]
    assert mlp.layers[1].weight.shape == ((8, 8, 1, 1) if dense else (8, 8))
    x = torch.randn(2, 4, 5, 5) if dense else torch.randn(2, 7, 4)
    ref = x
    for i, layer in enumerate(mlp.layers):
        ref = layer(ref)
        ref = ref.relu() if i < 2 else ref
    torch.testing.assert_close(mlp(x), ref)
    assert (mlp(x) < 0).any()  # no activation after the last layer
    with pytest.raises(ValueError, match='num_layers'):
        MLP(4, 8, 3, num_layers=0)


# ----------------------------------------------------------------- initialisation
def _old_trunc_normal_linear_init(module, std=0.02):
    # models/utils.py (SegViT ATM head, QU neck)
    from mmengine.model.weight_init import constant_init, trunc_normal_init
    for m in module.modules():
        if isinstance(m, torch.nn.Linear):
            trunc_normal_init(m, std=std, bias=0.0)
        elif isinstance(m, torch.nn.LayerNorm):
            constant_init(m, val=1.0, bias=0.0)


def _old_init_transformer_weights(module):
    # models/masked_transformer.py (ReSTR); the same loop was in context_decoder.py and
    # pre_model_prompting.py (DenseCLIP) as ``_reset_parameters``
    for m in module.modules():
        if isinstance(m, torch.nn.Linear):
            torch.nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                torch.nn.init.zeros_(m.bias)
        elif isinstance(m, torch.nn.LayerNorm):
            torch.nn.init.ones_(m.weight)
            torch.nn.init.zeros_(m.bias)


def _old_side_adapter_blocks(blocks):
    # models/decode_heads/side_adapter.py: SideAdapterViT._init_params, the blocks' loop
    from mmengine.model.weight_init import trunc_normal_
    for m in blocks.modules():
        if isinstance(m, torch.nn.Linear):
            trunc_normal_(m.weight, std=0.02)
            torch.nn.init.zeros_(m.bias)


def _probe():
    """Linears with and without bias, LayerNorms, an attention (its out_proj is a Linear
    subclass, its in_proj is not a Linear), a conv (left alone)."""
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.LayerNorm(16),
                               torch.nn.MultiheadAttention(16, 2), torch.nn.Conv2d(3, 4, 1),
                               torch.nn.Linear(16, 4, bias=False))


def _apply_seeded(fn, module):
    torch.manual_seed(3)
    with torch.no_grad():
        for p in module.parameters():
            p.normal_()  # not the init values: every reset must be visible
    torch.manual_seed(7)
    fn(module)
    return {k: v.clone() for k, v in module.state_dict().items()}


def _same_state(new, old):
    assert list(new) == list(old)
    for k in old:
        assert torch.equal(new[k], old[k]), k


@pytest.mark.parametrize('sampler,old', [('torch', _old_init_transformer_weights),
                                         ('mmengine', _old_trunc_normal_linear_init)])
def test_init_matches_former_routines(sampler, old):
    module = _probe()
    ref = _apply_seeded(old, module)
    new = _apply_seeded(lambda m: trunc_normal_init_weights(m, sampler=sampler), module)
    _same_state(new, ref)
    assert new['0.weight'].abs().max() <= 2.0 and 0.01 < new['0.weight'].std() < 0.03
    assert new['0.bias'].eq(0).all() and new['1.weight'].eq(1).all()
    assert new['2.out_proj.bias'].eq(0).all()


def test_init_side_adapter_blocks():
    """The side adapter's block loop (linears only) == the shared routine on fresh blocks
    (their LayerNorms are already 1/0)."""
    torch.manual_seed(0)
    blocks = SideAdapterViT(embed_dims=12, depth=2, num_heads=2, num_queries=3,
                            pos_grid=(2, 2), clip_channels=8, fusion_index=(0, )).blocks
    fresh = {k: v.clone() for k, v in blocks.state_dict().items()}
    torch.manual_seed(7)
    _old_side_adapter_blocks(blocks)
    ref = {k: v.clone() for k, v in blocks.state_dict().items()}
    blocks.load_state_dict(fresh)
    torch.manual_seed(7)
    trunc_normal_init_weights(blocks, sampler='mmengine')
    _same_state(blocks.state_dict(), ref)


def test_init_samplers_differ():
    """Why the sampler is a parameter: one seed, two different draws."""
    a, b = torch.empty(64), torch.empty(64)
    torch.manual_seed(0)
    torch.nn.init.trunc_normal_(a, std=0.02)
    torch.manual_seed(0)
    TRUNC_NORMAL_SAMPLERS['mmengine'](b, std=0.02)
    assert not torch.equal(a, b)
    with pytest.raises(ValueError, match='sampler'):
        trunc_normal_init_weights(_probe(), sampler='timm')


def _old_pre_model_prompting(module):
    torch.nn.init.trunc_normal_(module.queries, std=0.02)
    _old_init_transformer_weights(module)


def _init_sites():
    """name -> (module, its own initialisation, the former routine)."""
    from mmseg_ovseg.models.decode_heads.atm_head import ATMHead
    from mmseg_ovseg.models.decode_heads.restr_fusion import ReSTRFusionEncoder
    from mmseg_ovseg.models.necks.context_decoder import ContextDecoder
    from mmseg_ovseg.models.necks.pre_model_prompting import PreModelPrompting
    init_weights, reset = (lambda m: m.init_weights()), (lambda m: m._reset_parameters())
    return {
        'atm_head': (ATMHead(in_channels=8, num_classes=3, embed_dims=8, num_heads=2,
                             num_layers=1, use_stages=1), init_weights,
                     _old_trunc_normal_linear_init),
        'query_upsampling': (QueryUpsampling(in_channels=8, embed_dims=8, query_grid=(2, 2),
                                             num_layers=1, num_heads=2, num_levels=1),
                             init_weights, _old_trunc_normal_linear_init),
        'context_decoder': (ContextDecoder(visual_dim=8, embed_dims=8, num_heads=2,
                                           num_layers=1), reset, _old_init_transformer_weights),
        'pre_model_prompting': (PreModelPrompting(visual_dim=8, token_dim=8, num_queries=2,
                                                  embed_dims=8, num_heads=2, num_layers=1),
                                reset, _old_pre_model_prompting),
        # ReSTR's encoders initialise in __init__ with the shared routine's default sampler
        'restr_fusion': (ReSTRFusionEncoder(embed_dims=8, num_heads=2, num_layers=1),
                         trunc_normal_init_weights, _old_init_transformer_weights),
    }


@pytest.mark.parametrize('name', ['atm_head', 'query_upsampling', 'context_decoder',
                                  'pre_model_prompting', 'restr_fusion'])
def test_init_call_sites(name):
    """Each model's own initialisation == its former routine under the same seed."""
    torch.manual_seed(0)
    module, init, old = _init_sites()[name]
    ref = _apply_seeded(old, module)
    _same_state(_apply_seeded(init, module), ref)
