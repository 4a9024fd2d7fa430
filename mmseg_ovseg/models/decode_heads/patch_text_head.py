import math
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmseg.models.decode_heads.decode_head import BaseDecodeHead
from mmseg.registry import MODELS


@MODELS.register_module()
class PatchTextHead(BaseDecodeHead):
    """One-stage "patch embedding x text embedding" baseline of ZegCLIP.

    `ZegCLIP <https://arxiv.org/abs/2212.03588>`_, Sec. 3.2 (the baseline that the paper's
    relationship descriptor and decoder improve on): every dense CLIP patch embedding is
    compared with every class text embedding by cosine similarity, scaled by a temperature,
    which gives the segmentation logits directly. A learnable projection (1x1 conv or a small
    1x1-conv MLP) is added so that a model trained from scratch can align the two spaces.

    The input is the dict of :class:`TextEncoderDecoder.extract_feat`:
    ``feats[in_index]`` must be the dense patch embeddings ``(B, in_channels, h, w)`` (the
    default ``in_index=-2`` selects them from ``CLIPVisionTransformer(output_dense=True)``,
    whose outputs end with ``dense (B, C, h, w), global (B, C)``) and ``class_embeds`` the
    L2-normalised ``(C, D)`` text embeddings; ``channels`` must equal ``D``. The class count
    is the vocabulary's, so ``num_classes`` is set by the segmentor.

    Args:
        proj_type (str | None): 'conv' (Conv1x1), 'mlp' (Conv1x1-ReLU-Conv1x1) or None
            (identity; then ``in_channels == channels``). Default: 'conv'.
        logit_scale_init (float): initial temperature, CLIP's 1/0.07. Default: 1/0.07.
        learnable_logit_scale (bool): learn the log temperature as CLIP does (clamped at
            100). Default: True.
        **kwargs: :class:`BaseDecodeHead` arguments (``in_channels``, ``channels``,
            ``num_classes``, ``loss_decode``, ...).
        in_index (int): index of the dense embeddings in the backbone outputs. Default: -2.
    """

    def __init__(self,
                 proj_type: Optional[str] = 'conv',
                 logit_scale_init: float = 1 / 0.07,
                 learnable_logit_scale: bool = True,
                 in_index: int = -2,
                 init_cfg=None,
                 **kwargs):
        super().__init__(in_index=in_index, init_cfg=init_cfg, **kwargs)
        # Classification is by text embeddings, not by a fixed conv_seg.
        del self.conv_seg
        if proj_type == 'conv':
            self.proj = nn.Conv2d(self.in_channels, self.channels, 1)
        elif proj_type == 'mlp':
            self.proj = nn.Sequential(
                nn.Conv2d(self.in_channels, self.channels, 1), nn.ReLU(inplace=True),
                nn.Conv2d(self.channels, self.channels, 1))
        elif proj_type is None:
            if self.in_channels != self.channels:
                raise ValueError(f'PatchTextHead: proj_type=None needs in_channels == '
                                 f'channels, got {self.in_channels} and {self.channels}')
            self.proj = nn.Identity()
        else:
            raise ValueError(f"PatchTextHead: proj_type must be 'conv', 'mlp' or None, "
                             f'got {proj_type!r}')
        log_scale = torch.tensor(math.log(logit_scale_init))
        if learnable_logit_scale:
            self.logit_scale = nn.Parameter(log_scale)
        else:
            self.register_buffer('logit_scale', log_scale)

    def forward(self, inputs: dict) -> torch.Tensor:
        """Cosine logits ``(B, C, h, w)`` of patch embeddings against class embeddings."""
        feat = self._transform_inputs(inputs['feats'])
        if feat.dim() != 4 or feat.shape[1] != self.in_channels:
            raise ValueError(f'PatchTextHead: feats[{self.in_index}] must be (B, '
                             f'{self.in_channels}, h, w) dense embeddings, got '
                             f'{tuple(feat.shape)}')
        text = inputs['class_embeds']
        if text.dim() != 2 or text.shape[1] != self.channels:
            raise ValueError(f'PatchTextHead: class_embeds must be (C, {self.channels}), got '
                             f'{tuple(text.shape)}')
        if self.dropout is not None:
            feat = self.dropout(feat)
        feat = F.normalize(self.proj(feat), dim=1)
        scale = self.logit_scale.exp().clamp(max=100)
        return scale * torch.einsum('bdhw,cd->bchw', feat, text.to(feat))
