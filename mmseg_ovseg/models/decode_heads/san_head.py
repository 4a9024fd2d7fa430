"""SAN decode head: side adapter -> mask proposals + attention bias -> CLIP recognition.

Side Adapter Network for Open-Vocabulary Semantic Segmentation (Xu et al., CVPR 2023,
https://arxiv.org/abs/2302.12242):

- Sec. 3.2: side adapter ViT fused with CLIP features (:class:`SideAdapterViT`), mask and
  attention-bias decoders (:class:`MaskDecoder`, :class:`AttentionBiasDecoder`);
- Sec. 3.3 "Mask recognition with attention bias": the bias is max-pooled to the CLIP grid and
  steers SLS tokens through CLIP's last layers; their ``ln_post``/``proj`` outputs are the
  mask embeddings, classified by cosine similarity (x100) against the class text embeddings
  and a learned background embedding;
- Sec. 3.4 / Eq. 4: ``seg = softmax(cls)[..., :-1]`` x ``sigmoid(mask)`` summed over queries,
  masks upsampled to the input size before the sigmoid;
- Sec. 4.1: Hungarian-matched mask-classification loss with deep supervision.

The CLIP layers that run the SLS tokens belong to the backbone, so the segmentor
(:class:`~mmseg_ovseg.models.segmentors.SAN`) walks Fig. 2 and calls this head's steps in turn:
:meth:`SANHead.forward` (side adapter: mask proposals, attention biases), :meth:`pool_bias`,
then, after CLIP's recognition, :meth:`classify` and :meth:`predict_by_feat` (Eq. 4) or
:meth:`loss_by_feat`. Alone, the head cannot ``predict`` nor ``loss``.
"""
import math
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmseg.models.decode_heads.decode_head import BaseDecodeHead
from mmseg.registry import MODELS
from mmseg.utils import ConfigType, SampleList, seg_data_to_instance_data
from torch import Tensor

from ..layers import semantic_inference
from ..utils import prediction_size
from .san_decoders import AttentionBiasDecoder, MaskDecoder
from .side_adapter import SideAdapterViT

_NEEDS_SEGMENTOR = ('SANHead classifies masks with the CLIP backbone between its proposals and '
                    'its classes; run it through the SAN segmentor (SAN.encode_decode for '
                    'scores, SAN.loss for losses, SAN.decode for the logits)')


@MODELS.register_module()
class SANHead(BaseDecodeHead):
    """SAN head (side adapter, decoders, classification, Eq. 4, mask-classification loss).

    Args:
        num_classes (int): vocabulary size (set by the segmentor; may change at run time).
        side_adapter (dict): :class:`SideAdapterViT` arguments.
        mask_decoder (dict): :class:`MaskDecoder` arguments (without ``in_channels``).
        bias_decoder (dict): :class:`AttentionBiasDecoder` arguments (without
            ``in_channels``); ``num_heads`` must equal CLIP's.
        text_channels (int): dimension of the class (text) embeddings (512 for ViT-B/16).
        deep_supervision_idxs (Sequence[int]): 1-based side blocks with auxiliary outputs
            (SAN: ``(7, )``), their losses prefixed ``d{i}.``; the last block is always
            supervised (unprefixed losses) and used at inference.
        logit_scale (float): log of the cosine-similarity scale; frozen (CLIP's ``log(100)``).
        recognition (str): ``'attn_bias'`` (the paper: the bias decoder's per-head bias steers
            the SLS tokens) or ``'mask_pool'`` (ablation without the attention bias: every
            head's bias is ``log sigmoid`` of the query's own mask logits, so each SLS token
            attends to CLIP patches in proportion to its mask -- mask pooling through CLIP's
            attention; the bias decoder is then unused).
        loss_decode (dict): loss taking ``(cls_logits, mask_logits, gt_instances)``,
            default :class:`MaskClassificationLoss` with SAN's weights.
        **kwargs: other :class:`BaseDecodeHead` arguments (``align_corners``,
            ``ignore_index``, ``init_cfg``).

    Forward input (``SAN.extract_feat``): ``dict(inputs=(B, 3, H, W), class_embeds=(C, D),
    feats=dict(clip_feats=[(B, D_clip, h', w'), ...], clip_hw=(h', w'),
    split_tokens=(B, 1 + h'*w', D_clip)))``; the head reads ``inputs`` and ``clip_feats``.
    """

    def __init__(self,
                 num_classes: int,
                 side_adapter: dict = dict(),
                 mask_decoder: dict = dict(),
                 bias_decoder: dict = dict(),
                 text_channels: int = 512,
                 deep_supervision_idxs: Sequence[int] = (7, ),
                 logit_scale: float = math.log(100.0),
                 loss_decode: dict = dict(type='MaskClassificationLoss'),
                 recognition: str = 'attn_bias',
                 **kwargs):
        if recognition not in ('attn_bias', 'mask_pool'):
            raise ValueError(f"SANHead: recognition must be 'attn_bias' or 'mask_pool', got "
                             f'{recognition!r}')
        side_adapter = dict(side_adapter)
        embed_dims = side_adapter.setdefault('embed_dims', 240)
        # BaseDecodeHead's default init_cfg targets conv_seg, which this head does not have.
        kwargs.setdefault('init_cfg', None)
        super().__init__(
            in_channels=side_adapter.get('in_channels', 3),
            channels=embed_dims,
            num_classes=num_classes,
            dropout_ratio=0.0,
            loss_decode=loss_decode,
            **kwargs)
        del self.conv_seg  # classes are text embeddings, not a fixed classifier
        self.recognition = recognition
        self.side_adapter = SideAdapterViT(**side_adapter)
        self.mask_decoder = MaskDecoder(in_channels=embed_dims, **mask_decoder)
        self.bias_decoder = AttentionBiasDecoder(in_channels=embed_dims, **bias_decoder)
        depth = self.side_adapter.depth
        if any(not 1 <= i < depth for i in deep_supervision_idxs):
            raise ValueError(f'deep_supervision_idxs must be in [1, {depth}), got '
                             f'{deep_supervision_idxs}')
        self.deep_supervision_idxs = tuple(sorted(deep_supervision_idxs))
        self.num_queries = self.side_adapter.num_queries
        # Learned background ("no object") class embedding, trained with the head.
        self.bg_embed = nn.Parameter(torch.randn(1, text_channels) * text_channels**-0.5)
        self.logit_scale = nn.Parameter(torch.tensor(float(logit_scale)), requires_grad=False)

    def init_weights(self):
        # Sub-modules initialise themselves at construction (see SideAdapterViT).
        if self.init_cfg is not None:
            super().init_weights()

    # ------------------------------------------------------------------ network
    def classifier(self, class_embeds: Tensor) -> Tensor:
        """``(C, D)`` class embeddings -> scaled, normalised ``(C+1, D)`` with the background."""
        if class_embeds.dim() != 2 or class_embeds.shape[1] != self.bg_embed.shape[1]:
            raise ValueError(f'class_embeds must be (C, {self.bg_embed.shape[1]}), got '
                             f'{tuple(class_embeds.shape)}')
        weight = torch.cat([class_embeds.to(self.bg_embed.dtype), self.bg_embed], dim=0)
        return self.logit_scale.exp() * F.normalize(weight, dim=-1)

    def pool_bias(self, attn_bias: Tensor, clip_hw: Tuple[int, int]) -> Tensor:
        """``(B, heads, Q, h, w)`` side-grid bias -> ``(B, heads, Q, h'*w')`` on the CLIP grid
        (adaptive max pooling: a patch is as relevant as its most relevant sub-region)."""
        b, n, q, h, w = attn_bias.shape
        if (h, w) != tuple(clip_hw):
            attn_bias = F.adaptive_max_pool2d(attn_bias.reshape(b, n * q, h, w), clip_hw)
        return attn_bias.reshape(b, n, q, -1)

    def forward(self, inputs: dict, deep_supervision: Optional[bool] = None
                ) -> Tuple[List[Tensor], List[Tensor]]:
        """Side adapter branch of Fig. 2: mask proposals and attention biases.

        Args:
            inputs (dict): see the class docstring.
            deep_supervision (bool): also return the auxiliary outputs (default: in training).

        Returns:
            tuple[list[Tensor], list[Tensor]]: mask logits (B, Q, H/16, W/16) and attention
            biases (B, heads, Q, H/16, W/16) on the side grid, per supervised side block,
            auxiliary ones first, the final one last.
        """
        if deep_supervision is None:
            deep_supervision = self.training
        out_indices = (self.deep_supervision_idxs if deep_supervision else ()) + (
            self.side_adapter.depth, )
        side_outs = self.side_adapter(inputs['inputs'], inputs['feats']['clip_feats'],
                                      out_indices)
        all_masks, all_biases = [], []
        for query, x in side_outs:
            masks, query_embed = self.mask_decoder(query, x)
            if self.recognition == 'attn_bias':
                bias = self.bias_decoder(query_embed, x)
            else:  # the mask itself as the bias of every head
                heads = self.bias_decoder.num_heads
                bias = F.logsigmoid(masks).unsqueeze(1).expand(-1, heads, -1, -1, -1)
            all_masks.append(masks)
            all_biases.append(bias)
        return all_masks, all_biases

    def classify(self, mask_embeds: Tensor, class_embeds: Tensor) -> Tensor:
        """Class logits ``(B, Q, C+1)``: 100 x cosine of the ``(B, Q, D)`` mask embeddings
        (SLS outputs) with the ``(C, D)`` class embeddings and the background."""
        classifier = self.classifier(class_embeds)
        mask_embeds = F.normalize(mask_embeds, dim=-1)
        return torch.matmul(mask_embeds, classifier.t().to(mask_embeds.dtype))

    # ------------------------------------------------------------------ inference
    def predict(self, inputs: dict, batch_img_metas: List[dict],
                test_cfg: ConfigType) -> Tensor:
        """Not available on the head alone (see the module docstring)."""
        raise RuntimeError(_NEEDS_SEGMENTOR)

    def predict_by_feat(self, seg_logits: Tuple[Tensor, Tensor],
                        batch_img_metas: List[dict]) -> Tensor:
        """Step 5, Eq. 4: ``sum_q softmax(cls)[q, :C] * sigmoid(upsampled mask_q)``.

        Args:
            seg_logits (tuple[Tensor, Tensor]): class logits (B, Q, C+1), mask logits
                (B, Q, h, w) -- the order of :class:`ATMHead` and Mask2Former.
            batch_img_metas (list[dict]): ``pad_shape`` (or ``img_shape``) gives the size.

        Returns:
            Tensor: (B, C, H, W) non-negative segmentation scores, a view of a channels-last
            buffer; float32, or the autocast dtype under autocast.
        """
        cls_logits, mask_logits = seg_logits
        return semantic_inference(cls_logits, mask_logits, prediction_size(batch_img_metas))

    # ------------------------------------------------------------------ training
    def loss(self, inputs: dict, batch_data_samples: SampleList,
             train_cfg: ConfigType) -> Dict[str, Tensor]:
        """Not available on the head alone (see the module docstring)."""
        raise RuntimeError(_NEEDS_SEGMENTOR)

    def loss_by_feat(self, seg_logits: Tuple[List[Tensor], List[Tensor]],
                     batch_data_samples: SampleList) -> Dict[str, Tensor]:
        """Losses of the final output, unprefixed, and of each auxiliary output, prefixed
        ``d{i}.`` with ``i`` its side block (``deep_supervision_idxs``: ``d7.`` in SAN), as
        mmseg's SAN head; the same ``d{i}.`` scheme as :class:`ATMHead` and Mask2Former.

        Args:
            seg_logits (tuple[list[Tensor], list[Tensor]]): class logits (B, Q, C+1) and
                mask logits (B, Q, h, w) per output, auxiliary ones first, the final one last
                (:meth:`~mmseg_ovseg.models.segmentors.SAN.decode`).
            batch_data_samples (list[SegDataSample]): with ``gt_sem_seg``.
        """
        all_cls, all_masks = seg_logits
        gt_instances = seg_data_to_instance_data(self.ignore_index, batch_data_samples)
        names = [f'd{i}.' for i in self.deep_supervision_idxs][-(len(all_masks) - 1):] \
            if len(all_masks) > 1 else []
        losses = {}
        for prefix, masks, cls in zip(names + [''], all_masks, all_cls):
            for key, value in self.loss_decode(cls, masks, gt_instances).items():
                losses[prefix + key] = value
        return losses
