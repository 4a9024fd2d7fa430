"""SAN's side adapter network: a light ViT fused with frozen-CLIP features.

Side Adapter Network (Xu et al., CVPR 2023, https://arxiv.org/abs/2302.12242), Sec. 3.2
"Side adapter network" and "Feature fusion on visual tokens": a small, randomly initialised
ViT sees the full-resolution image; ``Q`` learnable query tokens are prepended to its patch
tokens; CLIP's intermediate patch maps are normalised, projected by a 1x1 conv, resized to the
side grid and added to the side patch tokens before chosen side blocks. The query/patch
outputs feed the mask and attention-bias decoders (``san_decoders.py``).
"""
from typing import List, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import BaseModule
from mmengine.model.weight_init import caffe2_xavier_init, trunc_normal_
from torch import Tensor

from mmseg_ovseg.models.layers import (
    LayerNorm2d,
    MultiheadAttention,
    resize_pos_embed,
    trunc_normal_init_weights,
)


class SideAdapterBlock(nn.Module):
    """Pre-norm ViT block (timm layout: ``norm1, attn.qkv, attn.proj, norm2, mlp.fc1/fc2``);
    the attention is the shared fused-qkv :class:`~mmseg_ovseg.models.layers.MultiheadAttention`
    on the CPU bfloat16 fast path (1.3-1.6x faster at the side adapter's heads of width 40).

    Args:
        embed_dims (int): token width.
        num_heads (int): attention heads.
        mlp_ratio (float): hidden width of the MLP relative to ``embed_dims``.
        norm_eps (float): LayerNorm epsilon (1e-6 in SAN).
    """

    def __init__(self, embed_dims: int, num_heads: int, mlp_ratio: float = 4.0,
                 norm_eps: float = 1e-6):
        super().__init__()
        self.num_heads = num_heads
        hidden = int(embed_dims * mlp_ratio)
        self.norm1 = nn.LayerNorm(embed_dims, eps=norm_eps)
        self.attn = MultiheadAttention(embed_dims, num_heads, fused_qkv=True, fast_path=True)
        self.norm2 = nn.LayerNorm(embed_dims, eps=norm_eps)
        self.mlp = nn.Module()
        self.mlp.fc1 = nn.Linear(embed_dims, hidden)
        self.mlp.fc2 = nn.Linear(hidden, embed_dims)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, N, C)`` -> ``(B, N, C)``."""
        x = x + self.attn(self.norm1(x))
        return x + self.mlp.fc2(F.gelu(self.mlp.fc1(self.norm2(x))))


class SideAdapterViT(BaseModule):
    """Side adapter ViT with CLIP feature fusion (SAN, Sec. 3.2).

    No CLS token and no final norm. The position embedding (learned for a reference grid and
    resized bicubically for other inputs) is added before block 0 and re-added after every
    block but the last, to patch tokens and (its own) to queries.

    Args:
        in_channels (int): image channels.
        embed_dims (int): width (240 in SAN).
        depth (int): number of blocks (8).
        num_heads (int): heads (6).
        mlp_ratio (float): MLP ratio (4).
        patch_size (int): patch size (16).
        patch_bias (bool): bias in the patch projection.
        num_queries (int): query tokens (100), one per mask proposal.
        pos_grid (tuple[int, int]): grid of the learned position embedding (640 / 16 = 40).
        clip_channels (int): width of the fused CLIP features (768 for ViT-B).
        fusion_index (Sequence[int]): for each fused CLIP feature, in order, the side block
            *before* which it is added (0 = on the embedded input; SAN: ``(0, 1, 2, 3)``).
        norm_eps (float): LayerNorm epsilon of blocks and fusion norms.
    """

    def __init__(self,
                 in_channels: int = 3,
                 embed_dims: int = 240,
                 depth: int = 8,
                 num_heads: int = 6,
                 mlp_ratio: float = 4.0,
                 patch_size: int = 16,
                 patch_bias: bool = True,
                 num_queries: int = 100,
                 pos_grid: Tuple[int, int] = (40, 40),
                 clip_channels: int = 768,
                 fusion_index: Sequence[int] = (0, 1, 2, 3),
                 norm_eps: float = 1e-6,
                 init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        if list(fusion_index) != sorted(set(fusion_index)) or \
                (fusion_index and not 0 <= fusion_index[-1] < depth):
            raise ValueError(f'fusion_index must be increasing block indices in [0, {depth}), '
                             f'got {fusion_index}')
        self.embed_dims = embed_dims
        self.depth = depth
        self.patch_size = patch_size
        self.num_queries = num_queries
        self.pos_grid = tuple(pos_grid)
        self.fusion_index = tuple(fusion_index)
        self.patch_embed = nn.Conv2d(in_channels, embed_dims, patch_size, patch_size,
                                     bias=patch_bias)
        self.pos_embed = nn.Parameter(torch.zeros(1, pos_grid[0] * pos_grid[1], embed_dims))
        self.query_embed = nn.Parameter(torch.zeros(1, num_queries, embed_dims))
        self.query_pos_embed = nn.Parameter(torch.zeros(1, num_queries, embed_dims))
        self.blocks = nn.ModuleList(
            SideAdapterBlock(embed_dims, num_heads, mlp_ratio, norm_eps) for _ in range(depth))
        # Fusion (Sec. 3.2): channels-first LayerNorm -> 1x1 conv to the side width.
        self.fusion_layers = nn.ModuleList(
            nn.Sequential(LayerNorm2d(clip_channels, eps=norm_eps),
                          nn.Conv2d(clip_channels, embed_dims, 1)) for _ in fusion_index)
        self._init_params()

    def _init_params(self):
        trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.query_embed, std=0.02)
        nn.init.normal_(self.query_pos_embed, std=0.02)
        trunc_normal_init_weights(self.blocks, sampler='mmengine')
        for fusion in self.fusion_layers:
            caffe2_xavier_init(fusion[1])

    def init_weights(self):
        # Parameters are initialised at construction; only a pretrained init_cfg applies.
        if self.init_cfg is not None:
            super().init_weights()

    def _pos_embed(self, hw: Tuple[int, int]) -> Tensor:
        """``(1, Q + h*w, C)``: the query positions, then the grid's resized to ``hw``."""
        pos = resize_pos_embed(self.pos_embed, self.pos_grid, hw, mode='bicubic')
        return torch.cat([self.query_pos_embed, pos], dim=1)

    def _fuse(self, x: Tensor, k: int, clip_feat: Tensor, hw: Tuple[int, int]) -> Tensor:
        fused = F.interpolate(self.fusion_layers[k](clip_feat), size=hw, mode='bilinear',
                              align_corners=False)
        patches = x[:, self.num_queries:] + fused.flatten(2).transpose(1, 2)
        return torch.cat([x[:, :self.num_queries], patches], dim=1)

    def forward(self, image: Tensor, clip_feats: Sequence[Tensor],
                out_indices: Sequence[int]) -> List[Tuple[Tensor, Tensor]]:
        """Encode the image, fusing CLIP features.

        Args:
            image (Tensor): (B, 3, H, W) full-scale image; ``H, W >= patch_size``.
            clip_feats (Sequence[Tensor]): one (B, clip_channels, h', w') map per fusion index.
            out_indices (Sequence[int]): 1-based counts of blocks after which to return
                outputs (e.g. ``(7, 8)``: deep supervision after block 7 and the final output).

        Returns:
            list[tuple[Tensor, Tensor]]: per index, the query tokens (B, Q, C) and the patch
            map (B, C, H/p, W/p).
        """
        if image.dim() != 4 or min(image.shape[-2:]) < self.patch_size:
            raise ValueError(f'side adapter needs (B, C, H, W) images of at least one '
                             f'{self.patch_size}x{self.patch_size} patch, got '
                             f'{tuple(image.shape)}')
        if len(clip_feats) != len(self.fusion_index):
            raise ValueError(f'expected {len(self.fusion_index)} CLIP features to fuse, got '
                             f'{len(clip_feats)}')
        if any(not 1 <= i <= self.depth for i in out_indices):
            raise ValueError(f'out_indices must be in [1, {self.depth}], got {out_indices}')
        x = self.patch_embed(image)
        hw = (x.shape[2], x.shape[3])
        x = torch.cat([self.query_embed.expand(x.shape[0], -1, -1), x.flatten(2).transpose(1, 2)],
                      dim=1)
        pos = self._pos_embed(hw)
        x = x + pos
        fusion = dict(zip(self.fusion_index, range(len(self.fusion_index))))
        if 0 in fusion:
            x = self._fuse(x, 0, clip_feats[0], hw)
        outs = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            # Fusion for block i+1 happens before the position re-add (the reference order).
            if i + 1 in fusion:
                x = self._fuse(x, fusion[i + 1], clip_feats[fusion[i + 1]], hw)
            if i + 1 in out_indices:
                feat = x[:, self.num_queries:].transpose(1, 2).reshape(
                    x.shape[0], -1, hw[0], hw[1])
                outs.append((x[:, :self.num_queries], feat))
            if i + 1 < self.depth:
                x = x + pos
        return outs
