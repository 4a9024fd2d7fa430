"""DenseCLIP's context decoder: vision-to-language (post-model) prompting.

`DenseCLIP <https://arxiv.org/abs/2112.01518>`_ (Rao et al., CVPR 2022), Sec. 3.3
"Context-aware prompting", post-model prompting: the class text embeddings ``t`` (from the
text encoder with learnable context) query the image's visual context ``[z_bar; z]`` (the
global embedding and every position of the dense map) through a small transformer decoder,

    v_post = TransDecoder(t, [z_bar; z]),        t <- t + gamma * v_post,

where ``gamma`` is a learnable per-channel scale initialised very small (1e-4), so training
starts from the language prior of the text encoder.
"""
from typing import Optional

import torch
import torch.nn as nn
from mmengine.model import BaseModule
from mmseg.registry import MODELS
from torch import Tensor

from ..layers import MultiheadAttention, trunc_normal_init_weights


class ContextAttention(MultiheadAttention):
    """Multi-head attention with bias-free q/k/v projections and a biased output projection
    (the shared :class:`~mmseg_ovseg.models.layers.MultiheadAttention`, names ``q_proj,
    k_proj, v_proj, out_proj`` as DenseCLIP's).

    Args:
        embed_dims (int): channels ``D`` of queries, keys and values.
        num_heads (int): heads; ``D`` must be divisible by it.
        dropout (float): dropout on the output projection.

    Shapes:
        query ``(B, Q, D)``, memory ``(B, M, D)`` -> ``(B, Q, D)``.
    """

    def __init__(self, embed_dims: int, num_heads: int, dropout: float = 0.0):
        super().__init__(embed_dims, num_heads, qkv_bias=False, proj_drop=dropout)


class ContextDecoderLayer(nn.Module):
    """Pre-norm transformer decoder layer: self-attention among the text queries,
    cross-attention to the visual context, GELU MLP (4x); each branch is residual.

    ``x <- x + SA(LN1(x)); x <- x + CA(LN2(x), memory); x <- x + Drop(MLP(LN3(x)))``.
    The memory is used as given (the decoder normalises it once in its projection).

    Shapes:
        x ``(B, K, D)``, memory ``(B, M, D)`` -> ``(B, K, D)``.
    """

    def __init__(self, embed_dims: int, num_heads: int, dropout: float = 0.1,
                 ffn_ratio: int = 4):
        super().__init__()
        self.norm1 = nn.LayerNorm(embed_dims)
        self.self_attn = ContextAttention(embed_dims, num_heads, dropout)
        self.norm2 = nn.LayerNorm(embed_dims)
        self.cross_attn = ContextAttention(embed_dims, num_heads, dropout)
        self.norm3 = nn.LayerNorm(embed_dims)
        hidden = embed_dims * ffn_ratio
        self.ffn = nn.Sequential(
            nn.Linear(embed_dims, hidden), nn.GELU(), nn.Dropout(dropout),
            nn.Linear(hidden, embed_dims))
        self.ffn_drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, memory: Tensor) -> Tensor:
        h = self.norm1(x)
        x = x + self.self_attn(h, h)
        x = x + self.cross_attn(self.norm2(x), memory)
        return x + self.ffn_drop(self.ffn(self.norm3(x)))


@MODELS.register_module()
class ContextDecoder(BaseModule):
    """Post-model prompting of DenseCLIP (Sec. 3.3): text embeddings attend to the visual
    context, and a ``gamma``-scaled residual updates them.

    ``visual_context`` is projected ``LN -> Linear(C -> D) -> LN``, the text ``LN ->
    Linear(C -> D)``; ``num_layers`` :class:`ContextDecoderLayer` run with the text as queries
    and the visual context as memory; the result is projected back ``LN -> Linear(D -> C)``
    (``v_post``) and ``t + gamma * v_post`` is returned. Linear weights are truncated-normal
    (std 0.02) with zero biases, LayerNorms are identity, ``gamma`` is ``gamma_init`` in every
    channel. The official RN50/RN101 ADE20K configs use ``embed_dims=256, num_heads=4,
    num_layers=3, dropout=0.1, gamma_init=1e-4``.

    Args:
        visual_dim (int): channels ``C`` of the text embeddings and the visual context (CLIP's
            embed dim: 1024 for RN50, 512 for RN101 / ViT-B).
        embed_dims (int): decoder width ``D``. Default: 256.
        num_heads (int): attention heads. Default: 4.
        num_layers (int): decoder layers. Default: 3.
        dropout (float): dropout of attention outputs and MLPs. Default: 0.1.
        gamma_init (float): initial value of the residual scale. Default: 1e-4.
        init_cfg (dict, optional): mmengine init config. Default: None.

    Shapes:
        text ``(B, K, C)`` (or ``(K, C)``, shared by the batch), visual_context
        ``(B, M, C)`` with ``M = 1 + h*w`` (global token first) -> ``(B, K, C)``.
    """

    def __init__(self,
                 visual_dim: int = 1024,
                 embed_dims: int = 256,
                 num_heads: int = 4,
                 num_layers: int = 3,
                 dropout: float = 0.1,
                 gamma_init: float = 1e-4,
                 init_cfg: Optional[dict] = None):
        super().__init__(init_cfg=init_cfg)
        self.visual_dim = visual_dim
        self.memory_proj = nn.Sequential(
            nn.LayerNorm(visual_dim), nn.Linear(visual_dim, embed_dims),
            nn.LayerNorm(embed_dims))
        self.text_proj = nn.Sequential(
            nn.LayerNorm(visual_dim), nn.Linear(visual_dim, embed_dims))
        self.layers = nn.ModuleList(
            ContextDecoderLayer(embed_dims, num_heads, dropout) for _ in range(num_layers))
        self.out_proj = nn.Sequential(
            nn.LayerNorm(embed_dims), nn.Linear(embed_dims, visual_dim))
        self.gamma = nn.Parameter(torch.full((visual_dim, ), float(gamma_init)))
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        trunc_normal_init_weights(self)

    def decode(self, text: Tensor, visual_context: Tensor) -> Tensor:
        """``v_post = TransDecoder(t, [z_bar; z])``: ``(B, K, C)`` before the gamma scale."""
        memory = self.memory_proj(visual_context)
        x = self.text_proj(text)
        for layer in self.layers:
            x = layer(x, memory)
        return self.out_proj(x)

    def forward(self, text: Tensor, visual_context: Tensor) -> Tensor:
        """Refined text embeddings ``t + gamma * v_post`` (see class docstring for shapes)."""
        if visual_context.dim() != 3 or visual_context.shape[-1] != self.visual_dim:
            raise ValueError(f'ContextDecoder: visual_context must be (B, M, '
                             f'{self.visual_dim}), got {tuple(visual_context.shape)}')
        if text.dim() == 2:
            text = text.unsqueeze(0).expand(visual_context.shape[0], -1, -1)
        if text.shape[0] != visual_context.shape[0] or text.shape[-1] != self.visual_dim:
            raise ValueError(f'ContextDecoder: text {tuple(text.shape)} does not match '
                             f'visual_context {tuple(visual_context.shape)}')
        return text + self.gamma * self.decode(text, visual_context)
