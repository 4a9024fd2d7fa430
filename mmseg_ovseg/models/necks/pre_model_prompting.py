"""DenseCLIP's pre-model prompting: visual context -> the text encoder's context tokens.

`DenseCLIP <https://arxiv.org/abs/2112.01518>`_ (Rao et al., CVPR 2022), Sec. 3.3
"Context-aware prompting", the *pre-model* variant. Language-domain prompting (CoOp) feeds the
text encoder ``y_k = [p, e_k]``: ``N`` learnable context vectors ``p`` followed by the token
embeddings ``e_k`` of class ``k``. Pre-model prompting replaces ``p`` by visual contexts
extracted from the image by a transformer decoder whose queries are a set of learnable tokens
``q (N, C)``, attending to the visual context ``[z_bar; z]`` (the global embedding and every
position of the dense map):

    v_pre = TransDecoder(q, [z_bar; z]),        y_k = [v_pre, e_k],

so the text features ``t_k = TextEncoder(y_k)`` depend on the image: the text tower runs once
per image (``B x K`` sequences). The paper compares it with post-model prompting
(:class:`ContextDecoder`, ``t <- t + gamma * TransDecoder(t, [z_bar; z])``), which keeps the
text tower image-independent and is the variant the released configs use; the official
repository never released pre-model code (DenseCLIP issues #11, #42). The decoder here is the
post-model one (same layers, widths and initialisation) with ``q`` in place of ``t`` and an
output projection to the text tower's token width instead of back to ``C``.
"""
from typing import Optional

import torch
import torch.nn as nn
from mmengine.model import BaseModule
from mmseg.registry import MODELS
from torch import Tensor

from ..layers import trunc_normal_init_weights
from .context_decoder import ContextDecoderLayer


@MODELS.register_module()
class PreModelPrompting(BaseModule):
    """``v_pre = TransDecoder(q, [z_bar; z])``: ``N`` learnable queries read the visual context
    and become the ``N`` context tokens of the text encoder (DenseCLIP Sec. 3.3, pre-model).

    The queries ``q (N, C)`` are projected ``LN -> Linear(C -> D)``, the visual context
    ``LN -> Linear(C -> D) -> LN`` (as the post-model decoder's text and memory); ``num_layers``
    pre-norm :class:`ContextDecoderLayer` (self-attention among the queries, cross-attention to
    the visual context, GELU MLP) run on them, and ``LN -> Linear(D -> W)`` maps the result to
    the token width ``W`` of the text tower. Linear weights and the queries are
    truncated-normal (std 0.02), biases zero, LayerNorms identity.

    Args:
        visual_dim (int): channels ``C`` of the visual context (CLIP's embed dim: 1024 for RN50,
            512 for RN101 / ViT-B).
        token_dim (int): width ``W`` of the text tower's token embeddings (512 for CLIP
            RN50/RN101/ViT-B); the output lands where CoOp's context vectors go.
        num_queries (int): ``N``, the number of context tokens (the text encoder's
            ``num_contexts``: 8 in DenseCLIP's layout). Default: 8.
        embed_dims (int): decoder width ``D``. Default: 256.
        num_heads (int): attention heads. Default: 4.
        num_layers (int): decoder layers. Default: 3.
        dropout (float): dropout of attention outputs and MLPs. Default: 0.1.
        init_cfg (dict, optional): mmengine init config. Default: None.

    Shapes:
        visual_context ``(B, M, C)`` with ``M = 1 + h*w`` (global token first) ->
        context tokens ``(B, N, W)``.
    """

    def __init__(self,
                 visual_dim: int = 1024,
                 token_dim: int = 512,
                 num_queries: int = 8,
                 embed_dims: int = 256,
                 num_heads: int = 4,
                 num_layers: int = 3,
                 dropout: float = 0.1,
                 init_cfg: Optional[dict] = None):
        super().__init__(init_cfg=init_cfg)
        if num_queries < 1 or num_layers < 1:
            raise ValueError(f'PreModelPrompting: num_queries and num_layers must be >= 1, '
                             f'got {num_queries} and {num_layers}')
        self.visual_dim = visual_dim
        self.token_dim = token_dim
        self.num_queries = num_queries
        self.queries = nn.Parameter(torch.empty(num_queries, visual_dim))
        self.query_proj = nn.Sequential(
            nn.LayerNorm(visual_dim), nn.Linear(visual_dim, embed_dims))
        self.memory_proj = nn.Sequential(
            nn.LayerNorm(visual_dim), nn.Linear(visual_dim, embed_dims),
            nn.LayerNorm(embed_dims))
        self.layers = nn.ModuleList(
            ContextDecoderLayer(embed_dims, num_heads, dropout) for _ in range(num_layers))
        self.out_proj = nn.Sequential(
            nn.LayerNorm(embed_dims), nn.Linear(embed_dims, token_dim))
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        nn.init.trunc_normal_(self.queries, std=0.02)
        trunc_normal_init_weights(self)

    def forward(self, visual_context: Tensor) -> Tensor:
        """``(B, M, C)`` visual context -> ``(B, N, W)`` context tokens ``v_pre``."""
        if visual_context.dim() != 3 or visual_context.shape[-1] != self.visual_dim:
            raise ValueError(f'PreModelPrompting: visual_context must be (B, M, '
                             f'{self.visual_dim}), got {tuple(visual_context.shape)}')
        memory = self.memory_proj(visual_context)
        x = self.query_proj(self.queries.to(memory.dtype))
        x = x.unsqueeze(0).expand(memory.shape[0], -1, -1)
        for layer in self.layers:
            x = layer(x, memory)
        return self.out_proj(x)
