"""SAN's mask decoder and attention-bias decoder (Xu et al., 2023, Sec. 3.2, Eq. 1-2).

Both decode the side adapter's query tokens and patch map with 3-layer MLPs into a
256-d space. The query embedding is shared (the paper notes ``Q_mask`` and ``Q_attn`` can be
the same): mask logits are ``Q_mask . V_mask`` over the side grid; the attention bias is
``Q_attn . V_attn`` with one ``V_attn`` per CLIP head, rescaled by a learned affine scalar.
"""
from typing import Tuple

import torch
import torch.nn as nn
from torch import Tensor

from mmseg_ovseg.models.layers import MLP


class MaskDecoder(nn.Module):
    """Mask proposals from query tokens and the side patch map (Eq. 1).

    Args:
        in_channels (int): side adapter width.
        embed_channels (int): width of the query/pixel embeddings (256).
        mlp_channels (int): hidden width of the MLPs (256).
        num_mlp_layers (int): MLP depth (3).
    """

    def __init__(self, in_channels: int = 240, embed_channels: int = 256,
                 mlp_channels: int = 256, num_mlp_layers: int = 3):
        super().__init__()
        self.query_mlp = MLP(in_channels, mlp_channels, embed_channels, num_mlp_layers)
        self.pix_mlp = MLP(in_channels, mlp_channels, embed_channels, num_mlp_layers, dense=True)

    def forward(self, query: Tensor, x: Tensor) -> Tuple[Tensor, Tensor]:
        """
        Args:
            query (Tensor): (B, Q, C) query tokens.
            x (Tensor): (B, C, h, w) side patch map.

        Returns:
            tuple[Tensor, Tensor]: mask logits (B, Q, h, w) and the query embedding (B, Q, E)
            shared with :class:`AttentionBiasDecoder`.
        """
        query = self.query_mlp(query)
        pix = self.pix_mlp(x)
        b, e, h, w = pix.shape
        masks = torch.bmm(query, pix.view(b, e, h * w)).view(b, -1, h, w)
        return masks, query


class AttentionBiasDecoder(nn.Module):
    """Per-head attention biases of the SLS tokens over the side grid (Eq. 2).

    Args:
        in_channels (int): side adapter width.
        num_heads (int): CLIP attention heads (12 for ViT-B, 16 for ViT-L); one bias each.
        embed_channels (int): width of the query embedding it is dotted with (256).
        mlp_channels (int): hidden width (256).
        num_mlp_layers (int): MLP depth (3).
        rescale (bool): learned affine rescaling of the bias (``Linear(1, 1)``).
    """

    def __init__(self, in_channels: int = 240, num_heads: int = 12, embed_channels: int = 256,
                 mlp_channels: int = 256, num_mlp_layers: int = 3, rescale: bool = True):
        super().__init__()
        self.num_heads = num_heads
        self.attn_mlp = MLP(in_channels, mlp_channels, embed_channels * num_heads,
                            num_mlp_layers, dense=True)
        self.bias_scaling = nn.Linear(1, 1) if rescale else None

    def forward(self, query_embed: Tensor, x: Tensor) -> Tensor:
        """
        Args:
            query_embed (Tensor): (B, Q, E) from :class:`MaskDecoder`.
            x (Tensor): (B, C, h, w) side patch map.

        Returns:
            Tensor: (B, heads, Q, h, w) attention bias on the side grid.
        """
        attn = self.attn_mlp(x)
        b, _, h, w = attn.shape
        attn = attn.view(b, self.num_heads, -1, h * w)  # (B, heads, E, hw)
        bias = torch.matmul(query_embed.unsqueeze(1), attn)  # (B, heads, Q, hw)
        if self.bias_scaling is not None:
            bias = bias * self.bias_scaling.weight.view(()) + self.bias_scaling.bias.view(())
        return bias.view(b, self.num_heads, -1, h, w)
