"""SegViT's ATM decoder head (Zhang et al., NeurIPS 2022; method, decoder:
ATM and its multi-level use on plain-ViT layers).

Plain-ViT features from several layers (official ViT-L: layers 8, 16, 24, i.e. out_indices
``(7, 15, 23)``) are each projected (``Linear(C_in -> D)`` + LayerNorm) and decoded, deepest
first, by their own :class:`~.atm.ATMDecoder` (3 layers). One set of learnable class queries
(query ``i`` = class ``i``) is carried from level to level. Every level yields a class
prediction ``Linear(D -> C+1)`` of its updated queries and the mask logits of its last layer;
the mask logits are summed cumulatively over levels (as the official code), resized to the
last level's grid. The last level is the prediction, earlier levels are deep-supervised.
Inference: :func:`~mmseg_ovseg.models.layers.semantic_inference`.

The Shrunk variant (method, "Shrunk structure") decodes one up-sampled feature map (from
:class:`~mmseg_ovseg.models.necks.QueryUpsampling`) with ``use_proj=False``,
``per_layer_outputs=True`` (every decoder layer supervised) and ``sum_masks=False``, as the
official ``ATMSingleHead``.
"""
from typing import Dict, List, Sequence, Tuple

import torch.nn as nn
import torch.nn.functional as F
from mmseg.models.decode_heads.decode_head import BaseDecodeHead
from mmseg.registry import MODELS
from mmseg.utils import ConfigType, SampleList
from torch import Tensor

from ..layers import semantic_inference, trunc_normal_init_weights
from ..utils import prediction_size
from .atm import ATMDecoder


@MODELS.register_module()
class ATMHead(BaseDecodeHead):
    """ATM decoder head.

    Args:
        in_channels (int): width of the backbone features (all levels equal, plain ViT).
        num_classes (int): classes ``C``; there are ``C`` class queries.
        embed_dims (int): decoder width ``D`` (official: ``in_channels // 2``).
        num_layers (int): ATM layers per level. Default 3.
        num_heads (int): attention heads (official ViT-L: 16, ViT-B: 12).
        use_stages (int): how many of the input levels are decoded (the first ``use_stages``
            inputs). Default 3.
        reverse_stages (bool): decode the deepest (last) level first, as official. Default True.
        use_proj (bool): per-level ``Linear + LayerNorm`` input projection; without it
            ``in_channels`` must equal ``embed_dims``. Default True.
        per_layer_outputs (bool): every decoder layer gives an output (Shrunk's single head)
            instead of the last layer of each level. Default False.
        sum_masks (bool): cumulative sum of mask logits over outputs. Default True.
        dropout (float), attn_drop (float): decoder dropouts. Default 0.1 each.
        channels (int): unused by the ATM head (``BaseDecodeHead`` needs it); defaults to
            ``embed_dims``.
        loss_decode (dict): loss called as ``loss(cls_logits, mask_logits, seg_label,
            ignore_index)``; default :class:`~mmseg_ovseg.models.losses.ATMLoss`.
        **kwargs: other :class:`BaseDecodeHead` arguments (``ignore_index``, ``align_corners``).

    Forward input: tuple of backbone maps ``(B, C_in, h_i, w_i)`` (any grid, not only square).
    Forward output: two lists of length ``O``, auxiliary outputs first and the final one last
    (as :class:`SANHead` and mmseg's Mask2Former): class logits ``(B, C, C+1)`` and mask logits
    ``(B, C, h, w)`` on the grid of the last decoded level. Loss keys: the final output's
    without prefix, those of auxiliary output ``i`` (from 0) prefixed ``d{i}.``.
    """

    def __init__(self,
                 in_channels: int,
                 num_classes: int,
                 embed_dims: int = 512,
                 num_layers: int = 3,
                 num_heads: int = 8,
                 use_stages: int = 3,
                 reverse_stages: bool = True,
                 use_proj: bool = True,
                 per_layer_outputs: bool = False,
                 sum_masks: bool = True,
                 dropout: float = 0.1,
                 attn_drop: float = 0.1,
                 channels: int = None,
                 loss_decode: dict = dict(type='ATMLoss'),
                 **kwargs):
        if kwargs.get('input_transform') is not None or 'in_index' in kwargs:
            raise ValueError('ATMHead selects its inputs with use_stages; do not set '
                             'in_index/input_transform')
        if not use_proj and in_channels != embed_dims:
            raise ValueError(f'use_proj=False needs in_channels == embed_dims, got '
                             f'{in_channels} and {embed_dims}')
        super().__init__(in_channels=in_channels, channels=channels or embed_dims,
                         num_classes=num_classes, loss_decode=loss_decode, **kwargs)
        del self.conv_seg  # classes come from the class queries
        if self.dropout is not None:
            del self.dropout
        self.embed_dims = embed_dims
        self.use_stages = use_stages
        self.reverse_stages = reverse_stages
        self.per_layer_outputs = per_layer_outputs
        self.sum_masks = sum_masks
        self.input_proj = nn.ModuleList(
            nn.Linear(in_channels, embed_dims) if use_proj else nn.Identity()
            for _ in range(use_stages))
        self.proj_norm = nn.ModuleList(
            nn.LayerNorm(embed_dims) if use_proj else nn.Identity() for _ in range(use_stages))
        self.decoders = nn.ModuleList(
            ATMDecoder(num_layers, embed_dims=embed_dims, num_heads=num_heads,
                       dropout=dropout, attn_drop=attn_drop) for _ in range(use_stages))
        self.queries = nn.Embedding(num_classes, embed_dims)
        self.class_embed = nn.Linear(embed_dims, num_classes + 1)

    def init_weights(self):
        """Official initialisation: truncated normal (std 0.02) linears, unit LayerNorms."""
        trunc_normal_init_weights(self, sampler='mmengine')

    def forward(self, inputs: Sequence[Tensor]) -> Tuple[List[Tensor], List[Tensor]]:
        """Class and mask logits of every supervised output (see the class docstring)."""
        if len(inputs) < self.use_stages:
            raise ValueError(f'ATMHead decodes {self.use_stages} levels but got {len(inputs)} '
                             'backbone outputs (check the backbone out_indices)')
        feats = list(inputs[:self.use_stages])
        if self.reverse_stages:
            feats.reverse()
        b = feats[0].shape[0]
        query = self.queries.weight.unsqueeze(0).expand(b, -1, -1)
        cls_out, mask_out = [], []
        for feat, proj, norm, decoder in zip(feats, self.input_proj, self.proj_norm,
                                             self.decoders):
            if feat.dim() != 4:
                raise ValueError(f'ATMHead expects (B, C, h, w) maps, got {tuple(feat.shape)}')
            h, w = feat.shape[-2:]
            memory = norm(proj(feat.flatten(2).transpose(1, 2)))  # (B, hw, D)
            layer_outs = decoder(query, memory)
            query = layer_outs[-1][0]
            for q, mask in (layer_outs if self.per_layer_outputs else layer_outs[-1:]):
                cls_out.append(self.class_embed(q))
                mask_out.append(mask.unflatten(2, (h, w)))  # (B, Q, h, w)
        size = mask_out[-1].shape[-2:]
        masks = []
        for i, mask in enumerate(mask_out):
            if mask.shape[-2:] != size:
                mask = F.interpolate(mask, size=size, mode='bilinear', align_corners=False)
            masks.append(masks[-1] + mask if self.sum_masks and i else mask)
        return cls_out, masks

    # ------------------------------------------------------------------ inference
    def predict(self, inputs: Sequence[Tensor], batch_img_metas: List[dict],
                test_cfg: ConfigType) -> Tensor:
        """(B, C, H, W) class probabilities of the final output."""
        cls_out, mask_out = self.forward(inputs)
        return self.predict_by_feat((cls_out[-1], mask_out[-1]), batch_img_metas)

    def predict_by_feat(self, seg_logits: Tuple[Tensor, Tensor],
                        batch_img_metas: List[dict]) -> Tensor:
        """Mask logits upsampled (bilinear) to the input size, then the inference rule.

        Args:
            seg_logits (tuple[Tensor, Tensor]): class logits (B, Q, C+1), mask logits
                (B, Q, h, w).
            batch_img_metas (list[dict]): ``img_shape`` of a slide crop, else ``pad_shape``.

        Returns:
            Tensor: (B, C, H, W) probabilities ``sum_q p_q(c) sigmoid(m_q)`` (a channels-last
            view, see :func:`~mmseg_ovseg.models.layers.semantic_inference`).
        """
        cls_logits, mask_logits = seg_logits
        return semantic_inference(cls_logits, mask_logits, prediction_size(batch_img_metas),
                                  align_corners=self.align_corners)

    # ------------------------------------------------------------------ training
    def loss(self, inputs: Sequence[Tensor], batch_data_samples: SampleList,
             train_cfg: ConfigType) -> Dict[str, Tensor]:
        """Losses of every output (see :meth:`loss_by_feat`)."""
        return self.loss_by_feat(self.forward(inputs), batch_data_samples)

    def loss_by_feat(self, seg_logits: Tuple[List[Tensor], List[Tensor]],
                     batch_data_samples: SampleList) -> Dict[str, Tensor]:
        """Losses of the final output, unprefixed, and of each auxiliary output ``i``,
        prefixed ``d{i}.`` (mmdet/mmseg Mask2Former's naming; ``i`` counts the auxiliary
        outputs from 0, in :meth:`forward`'s order).

        Args:
            seg_logits (tuple[list[Tensor], list[Tensor]]): class logits (B, C, C+1) and mask
                logits (B, C, h, w) per output, auxiliary ones first, the final one last.
            batch_data_samples (list[SegDataSample]): with ``gt_sem_seg``.
        """
        cls_out, mask_out = seg_logits
        seg_label = self._stack_batch_gt(batch_data_samples).squeeze(1)  # (B, H, W)
        losses = {}
        for i, (cls, mask) in enumerate(zip(cls_out, mask_out)):
            prefix = '' if i == len(cls_out) - 1 else f'd{i}.'
            for key, value in self.loss_decode(cls, mask, seg_label,
                                               ignore_index=self.ignore_index).items():
                losses[prefix + key] = value
        return losses
