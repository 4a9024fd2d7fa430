"""Query-based up-sampling (QU): the decoder side of SegViT-Shrunk.

`SegViT <https://arxiv.org/abs/2210.05844>`_, method, "Shrunk structure" (QU): after
:class:`~mmseg_ovseg.models.backbones.ShrunkVisionTransformer` halved the token grid, a set of
learnable queries laid out on the 1/16 grid recovers a high-resolution feature map. As in the
official ``TPNATMHead``, the queries pass through one 3-layer transformer decoder per backbone
level, in the given order (official: layer 8 features at 1/16, then layer 24 at 1/32), each
level first projected (``Linear + LayerNorm``); the updated queries, reshaped to the 1/16 grid,
are the feature map that a single-level :class:`~mmseg_ovseg.models.decode_heads.ATMHead`
decodes.

The official queries are an ``(img_size / 16)^2`` embedding, so they only fit square inputs of
the training size. Here they form a ``query_grid`` that is resized (bicubic, like ViT position
embeddings) when the 1/16 grid of the input differs; at the training size nothing changes.
"""
from typing import Sequence, Tuple

import torch.nn as nn
from mmengine.model import BaseModule
from mmseg.registry import MODELS
from torch import Tensor

from ..layers import resize_pos_embed, trunc_normal_init_weights


@MODELS.register_module()
class QueryUpsampling(BaseModule):
    """QU neck: learnable grid queries decoding multi-level ViT tokens.

    Args:
        in_channels (int): width of the backbone maps.
        embed_dims (int): query width ``D`` (official: ``in_channels // 2``).
        query_grid (tuple[int, int]): query layout, the 1/16 grid of the training crop
            (official ADE 640: (40, 40)).
        num_layers (int): decoder layers per level. Default 3.
        num_heads (int): attention heads. Default 8.
        num_levels (int): backbone levels decoded (the first ``num_levels`` inputs, in order).
        dropout (float): decoder dropout. Default 0.1 (PyTorch / official default).
        init_cfg (dict, optional): mmengine init config.

    Forward: tuple of ``(B, C_in, h_i, w_i)`` maps, the first at stride 16 -> a one-element tuple
    with the ``(B, D, h_0, w_0)`` map of the updated queries.
    """

    def __init__(self,
                 in_channels: int,
                 embed_dims: int,
                 query_grid: Tuple[int, int] = (40, 40),
                 num_layers: int = 3,
                 num_heads: int = 8,
                 num_levels: int = 2,
                 dropout: float = 0.1,
                 init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        self.num_levels = num_levels
        self.query_grid = tuple(query_grid)
        self.input_proj = nn.ModuleList(
            nn.Linear(in_channels, embed_dims) for _ in range(num_levels))
        self.proj_norm = nn.ModuleList(nn.LayerNorm(embed_dims) for _ in range(num_levels))
        self.decoders = nn.ModuleList(
            nn.TransformerDecoder(
                nn.TransformerDecoderLayer(embed_dims, num_heads, 4 * embed_dims, dropout,
                                           batch_first=True), num_layers)
            for _ in range(num_levels))
        self.queries = nn.Embedding(self.query_grid[0] * self.query_grid[1], embed_dims)

    def init_weights(self):
        """Official initialisation: truncated normal (std 0.02) linears, unit LayerNorms."""
        trunc_normal_init_weights(self, sampler='mmengine')

    def grid_queries(self, hw: Tuple[int, int]) -> Tensor:
        """``(h*w, D)`` queries for an ``(h, w)`` output grid."""
        return resize_pos_embed(self.queries.weight, self.query_grid, hw, mode='bicubic')

    def forward(self, inputs: Sequence[Tensor]) -> Tuple[Tensor]:
        if len(inputs) < self.num_levels:
            raise ValueError(f'QueryUpsampling decodes {self.num_levels} levels but got '
                             f'{len(inputs)} backbone outputs')
        b = inputs[0].shape[0]
        h, w = inputs[0].shape[-2:]
        query = self.grid_queries((h, w)).unsqueeze(0).expand(b, -1, -1)
        for feat, proj, norm, decoder in zip(inputs[:self.num_levels], self.input_proj,
                                             self.proj_norm, self.decoders):
            memory = norm(proj(feat.flatten(2).transpose(1, 2)))
            query = decoder(query, memory)
        return (query.transpose(1, 2).reshape(b, -1, h, w), )
