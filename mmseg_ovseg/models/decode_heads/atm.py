"""The Attention-to-Mask (ATM) module of SegViT.

`SegViT: Semantic Segmentation with Plain Vision Transformers
<https://arxiv.org/abs/2210.05844>`_ (Zhang et al., NeurIPS 2022), method, decoder part
"Attention-to-Mask (ATM)": class-query tokens ``G`` (one per class) cross-attend to the patch
tokens ``F`` of a ViT layer. The similarity ``S = (G W_q)(F W_k)^T / sqrt(d)`` that the
attention softmax normalises is also read out directly: ``sigmoid(S)`` is each class's mask
(``Mask = Sigmoid(Q K^T / sqrt(d))``), while the softmax-weighted values update the class
tokens, which are then classified (a linear layer + softmax). With several heads the mask is
the head-average of the pre-softmax similarities.

Each ATM decoder layer is a post-norm transformer decoder layer (class-token self-attention,
ATM cross-attention, FFN; LayerNorm after each residual), as in the official code.
"""
from typing import List, Tuple

import torch.nn as nn
from torch import Tensor

from mmseg_ovseg.models.layers import MultiheadAttention


class ATMCrossAttention(MultiheadAttention):
    """Multi-head cross-attention that also returns its pre-softmax similarity map.

    The shared :class:`~mmseg_ovseg.models.layers.MultiheadAttention` with SegViT's
    projection names (``q, k, v, proj``).

    Args:
        embed_dims (int): token width ``D`` (query and key/value tokens).
        num_heads (int): heads; ``D`` must be divisible by it.
        qkv_bias (bool): biases of the q/k/v projections. Default True (official).
        attn_drop (float): dropout on the softmax attention (not on the mask). Default 0.1.
        proj_drop (float): dropout after the output projection. Default 0.

    Forward:
        query (Tensor): (B, Q, D) class tokens.
        memory (Tensor): (B, N, D) patch tokens.

    Returns:
        tuple[Tensor, Tensor]: updated tokens (B, Q, D) (before the residual) and mask logits
        (B, Q, N): the head-averaged ``q k^T / sqrt(D / num_heads)``.
    """

    def __init__(self, embed_dims: int, num_heads: int, qkv_bias: bool = True,
                 attn_drop: float = 0.1, proj_drop: float = 0.0):
        super().__init__(embed_dims, num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop,
                         proj_drop=proj_drop, proj_names=('q', 'k', 'v', 'proj'))

    def forward(self, query: Tensor, memory: Tensor) -> Tuple[Tensor, Tensor]:
        out, sim = super().forward(query, memory, return_logits=True)
        return out, sim.mean(dim=1)


class ATMDecoderLayer(nn.Module):
    """One post-norm decoder layer with ATM cross-attention.

    ``x = LN1(x + SelfAttn(x)); x = LN2(x + ATM(x, F)); x = LN3(x + FFN(x))``. Both
    attentions are the shared :class:`~mmseg_ovseg.models.layers.MultiheadAttention`: the
    self-attention in ``nn.MultiheadAttention``'s layout (``self_attn.in_proj_weight``,
    ``in_proj_bias``, ``out_proj.*``: the official keys).

    Args:
        embed_dims (int): token width ``D``.
        num_heads (int): heads of both attentions.
        ffn_ratio (int): FFN hidden width = ``ffn_ratio * D``. Default 4.
        dropout (float): residual/FFN dropout (and self-attention dropout). Default 0.1.
        attn_drop (float): dropout on the ATM attention weights. Default 0.1.

    Forward: ``(B, Q, D)`` queries and ``(B, N, D)`` memory -> ``(B, Q, D)`` queries and
    ``(B, Q, N)`` mask logits.
    """

    def __init__(self, embed_dims: int, num_heads: int, ffn_ratio: int = 4,
                 dropout: float = 0.1, attn_drop: float = 0.1):
        super().__init__()
        # the official nn.MultiheadAttention's layout (in_proj_weight/in_proj_bias, out_proj),
        # so official checkpoints load unchanged and seeded initial weights are torch's
        self.self_attn = MultiheadAttention(embed_dims, num_heads, attn_drop=dropout,
                                            torch_layout=True)
        self.cross_attn = ATMCrossAttention(embed_dims, num_heads, attn_drop=attn_drop)
        self.ffn = nn.Sequential(
            nn.Linear(embed_dims, ffn_ratio * embed_dims), nn.ReLU(inplace=True),
            nn.Dropout(dropout), nn.Linear(ffn_ratio * embed_dims, embed_dims))
        self.norm1 = nn.LayerNorm(embed_dims)
        self.norm2 = nn.LayerNorm(embed_dims)
        self.norm3 = nn.LayerNorm(embed_dims)
        self.drop1 = nn.Dropout(dropout)
        self.drop2 = nn.Dropout(dropout)
        self.drop3 = nn.Dropout(dropout)

    def forward(self, query: Tensor, memory: Tensor) -> Tuple[Tensor, Tensor]:
        x = self.norm1(query + self.drop1(self.self_attn(query)))
        out, mask = self.cross_attn(x, memory)
        x = self.norm2(x + self.drop2(out))
        x = self.norm3(x + self.drop3(self.ffn(x)))
        return x, mask


class ATMDecoder(nn.Module):
    """A stack of :class:`ATMDecoderLayer` on one feature level.

    Args:
        num_layers (int): layers (official: 3 per ViT level).
        **layer_kwargs: :class:`ATMDecoderLayer` arguments.

    Forward: ``(B, Q, D)`` queries, ``(B, N, D)`` memory -> list of ``num_layers`` pairs
    ``(queries (B, Q, D), mask logits (B, Q, N))``, one per layer.
    """

    def __init__(self, num_layers: int, **layer_kwargs):
        super().__init__()
        if num_layers < 1:
            raise ValueError(f'num_layers must be >= 1, got {num_layers}')
        self.layers = nn.ModuleList(ATMDecoderLayer(**layer_kwargs) for _ in range(num_layers))

    def forward(self, query: Tensor, memory: Tensor) -> List[Tuple[Tensor, Tensor]]:
        outs = []
        for layer in self.layers:
            query, mask = layer(query, memory)
            outs.append((query, mask))
        return outs
