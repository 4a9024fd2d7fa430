"""ZegCLIP decoder: relationship-descriptor queries attending to CLIP patch embeddings.

`ZegCLIP <https://arxiv.org/abs/2212.03588>`_, Sec. 3.2 (one-stage text-patch matching
decoder) and Sec. 3.5 "Relationship Descriptor" (Eq. 7): the query of class ``c`` is
``q_c = Linear([t_c * g, t_c])`` -- the Hadamard product of its text embedding ``t_c`` with the
image's global CLIP embedding ``g`` (the terms of CLIP's own image-text score) concatenated with
``t_c``. A few layers of cross-attention + FFN update the queries against the dense patch
embeddings; the segmentation logit of class ``c`` at patch ``j`` is the scaled dot product
``q_c . k_j / sqrt(d)`` of the last layer (before the softmax, averaged over the heads), i.e.
the attention map *is* the mask (Eq. 2).

Deviation from the official code, on purpose: its decoder layers are torch
``TransformerDecoderLayer`` s whose self-attention (and ``norm1``) is built but skipped in the
forward; those 3.15M parameters are not created here (a converter drops them).
"""
from typing import Tuple

import torch
import torch.nn as nn
from mmseg.models.decode_heads.decode_head import BaseDecodeHead
from mmseg.registry import MODELS
from torch import Tensor

from ..layers import MultiheadAttention


class MaskCrossAttention(MultiheadAttention):
    """Cross-attention that also returns its head-averaged pre-softmax logits (Eq. 2).

    The shared :class:`~mmseg_ovseg.models.layers.MultiheadAttention` with ZegCLIP's
    projection names (``q_proj, k_proj, v_proj, out_proj``).

    Args:
        dims (int): query/key/value width.
        num_heads (int): attention heads.
        attn_drop (float): dropout on the attention weights.
    """

    def __init__(self, dims: int, num_heads: int, attn_drop: float = 0.1):
        super().__init__(dims, num_heads, attn_drop=attn_drop)

    def forward(self, query: Tensor, memory: Tensor) -> Tuple[Tensor, Tensor]:
        """``query (B, Q, d)``, ``memory (B, N, d)`` -> ``(B, Q, d)`` and logits ``(B, Q, N)``."""
        out, logits = super().forward(query, memory, return_logits=True)
        return out, logits.mean(1)


class MaskDecoderLayer(nn.Module):
    """Post-norm decoder layer without self-attention: cross-attention, then FFN.

    Args:
        dims (int): width. num_heads (int): heads. feedforward_channels (int): FFN width.
        dropout (float): dropout on both residual branches and inside the FFN.
        attn_drop (float): attention-weight dropout.
    """

    def __init__(self, dims: int, num_heads: int, feedforward_channels: int,
                 dropout: float = 0.1, attn_drop: float = 0.1):
        super().__init__()
        self.cross_attn = MaskCrossAttention(dims, num_heads, attn_drop)
        self.norm1 = nn.LayerNorm(dims)
        self.ffn = nn.Sequential(
            nn.Linear(dims, feedforward_channels), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(feedforward_channels, dims))
        self.norm2 = nn.LayerNorm(dims)
        self.drop1 = nn.Dropout(dropout)
        self.drop2 = nn.Dropout(dropout)

    def forward(self, query: Tensor, memory: Tensor) -> Tuple[Tensor, Tensor]:
        """Updated queries ``(B, Q, d)`` and this layer's mask logits ``(B, Q, N)``."""
        out, logits = self.cross_attn(query, memory)
        query = self.norm1(query + self.drop1(out))
        query = self.norm2(query + self.drop2(self.ffn(query)))
        return query, logits


@MODELS.register_module()
class ZegCLIPHead(BaseDecodeHead):
    """ZegCLIP's relationship-descriptor decoder head.

    Takes the dict of :class:`TextEncoderDecoder.extract_feat`. ``feats`` are the outputs of
    ``CLIPVisionTransformer(output_dense=True, normalize_dense=True)``: ``feats[in_index]`` the
    dense patch embeddings ``(B, C_emb, h, w)`` (the decoder memory, used raw as the
    official ``use_proj=False``) and ``feats[global_index]`` the global embedding
    ``(B, C_emb)``; ``class_embeds`` are the ``(C, C_emb)`` text embeddings. ``forward``
    returns mask logits ``(B, C, h, w)``; the base class upsamples them bilinearly to the
    labels (training) or the input (inference), as the official head upsamples to the crop.

    Use the non-exclusive loss (``NonExclusiveFocalLoss`` + ``NonExclusiveDiceLoss``) for the
    paper's model or ``CrossEntropyLoss`` for its softmax ablation.

    Args:
        in_channels (int): CLIP embedding width ``C_emb`` (512 for ViT-B/16). It is also the
            decoder width: the masks compare queries with the embeddings directly.
        channels (int): must equal ``in_channels`` (kept for the mmseg interface).
        num_layers (int): decoder layers. Default: 3.
        num_heads (int): attention heads. Default: 8.
        feedforward_channels (int): FFN width. Default: 2048 (4 x 512).
        dropout (float): residual/FFN dropout. Default: 0.1.
        attn_drop (float): attention-weight dropout. Default: 0.1.
        query_type (str): ``'rd'`` (relationship descriptor, Eq. 7) or ``'text'`` (the text
            embeddings themselves, the paper's baseline). Default: 'rd'.
        global_index (int): index of the global embedding in ``feats``. Default: -1.
        in_index (int): index of the dense embeddings in ``feats``. Default: -2.
        **kwargs: other :class:`BaseDecodeHead` arguments (``num_classes``, set by the
            segmentor from the vocabulary; ``loss_decode``; ``ignore_index``; ...).
    """

    def __init__(self,
                 in_channels: int = 512,
                 channels: int = 512,
                 num_layers: int = 3,
                 num_heads: int = 8,
                 feedforward_channels: int = 2048,
                 dropout: float = 0.1,
                 attn_drop: float = 0.1,
                 query_type: str = 'rd',
                 global_index: int = -1,
                 in_index: int = -2,
                 init_cfg=(dict(type='TruncNormal', layer='Linear', std=0.02, bias=0),
                           dict(type='Constant', layer='LayerNorm', val=1.0, bias=0)),
                 **kwargs):
        kwargs.setdefault('dropout_ratio', 0.0)  # no Dropout2d: dropout is inside the layers
        super().__init__(in_channels, channels, in_index=in_index, init_cfg=list(init_cfg),
                         **kwargs)
        if channels != in_channels:
            raise ValueError(f'ZegCLIPHead: channels ({channels}) must equal in_channels '
                             f'({in_channels}); queries are matched with the embeddings')
        if num_layers < 1:
            raise ValueError(f'ZegCLIPHead: num_layers must be >= 1, got {num_layers}')
        if query_type not in ('rd', 'text'):
            raise ValueError(f"ZegCLIPHead: query_type must be 'rd' or 'text', got "
                             f'{query_type!r}')
        # Classes are text embeddings, not a fixed conv_seg.
        del self.conv_seg
        self.query_type = query_type
        self.global_index = global_index
        self.query_proj = nn.Linear(2 * channels, channels) if query_type == 'rd' else None
        self.layers = nn.ModuleList(
            MaskDecoderLayer(channels, num_heads, feedforward_channels, dropout, attn_drop)
            for _ in range(num_layers))

    def relationship_queries(self, text: Tensor, global_embed: Tensor) -> Tensor:
        """Eq. 7: ``Linear([t * g, t])`` for every image and class.

        Args:
            text: ``(C, d)`` class embeddings.
            global_embed: ``(B, d)`` image embeddings.

        Returns:
            ``(B, C, d)`` queries.
        """
        text = text.unsqueeze(0).expand(global_embed.shape[0], -1, -1)
        if self.query_type == 'text':
            return text
        return self.query_proj(torch.cat([text * global_embed.unsqueeze(1), text], dim=-1))

    def forward(self, inputs: dict) -> Tensor:
        """Mask logits ``(B, C, h, w)`` of the last decoder layer."""
        feats = inputs['feats']
        dense, global_embed = feats[self.in_index], feats[self.global_index]
        d = self.in_channels
        if dense.dim() != 4 or dense.shape[1] != d:
            raise ValueError(f'ZegCLIPHead: feats[{self.in_index}] must be dense embeddings '
                             f'(B, {d}, h, w), got {tuple(dense.shape)}; use '
                             'CLIPVisionTransformer(output_dense=True)')
        if global_embed.dim() != 2 or global_embed.shape != (dense.shape[0], d):
            raise ValueError(f'ZegCLIPHead: feats[{self.global_index}] must be the global '
                             f'embedding ({dense.shape[0]}, {d}), got '
                             f'{tuple(global_embed.shape)}')
        text = inputs['class_embeds']
        if text.dim() != 2 or text.shape[1] != d:
            raise ValueError(f'ZegCLIPHead: class_embeds must be (C, {d}), got '
                             f'{tuple(text.shape)}')
        b, _, h, w = dense.shape
        memory = dense.flatten(2).transpose(1, 2)  # (B, hw, d)
        query = self.relationship_queries(text.to(memory.dtype), global_embed)
        for layer in self.layers:
            # The mask of a layer comes from its *input* queries; the last one is returned.
            query, logits = layer(query, memory)
        return logits.reshape(b, -1, h, w)
