"""SAN segmentor: asymmetric-resolution CLIP interleaved with the side adapter head.

Side Adapter Network (Xu et al., CVPR 2023, https://arxiv.org/abs/2302.12242), Fig. 2/3:
the frozen CLIP ViT sees the image at a reduced scale (0.5 for ViT-B/16: 640 -> 320, 0.7 for
ViT-L/14: 640 -> 448, position embeddings resized), its post-``ln_pre`` embedding and some
layer outputs are fused into the side adapter (which sees full scale), and its layers from the
split on run the SLS tokens steered by the side adapter's attention bias (Sec. 3.3).
"""
from typing import Sequence

import torch.nn.functional as F
from torch import Tensor

from mmseg.registry import MODELS
from .text_encoder_decoder import TextEncoderDecoder


@MODELS.register_module()
class SAN(TextEncoderDecoder):
    """Side Adapter Network segmentor.

    Args:
        clip_scale (float): resize factor of the CLIP input (bilinear).
        fusion_layers (Sequence[int]): CLIP features fused into the side adapter, as the
            number of CLIP blocks run before taking the feature (0 = the post-``ln_pre``
            embedding). ViT-B/16: ``(0, 3, 6, 9)``; ViT-L/14: ``(0, 6, 12, 18)``.
        split_layer (int): first CLIP block run with SLS tokens (9 of 12; 18 of 24).
        **kwargs: :class:`TextEncoderDecoder` arguments; ``backbone`` must be a
            ``CLIPVisionTransformer`` and ``decode_head`` a ``SANHead``.
    """

    # Eq. 4 scores are sums of softmax x sigmoid products.
    nonnegative_scores = True

    def __init__(self,
                 *args,
                 clip_scale: float = 0.5,
                 fusion_layers: Sequence[int] = (0, 3, 6, 9),
                 split_layer: int = 9,
                 **kwargs):
        super().__init__(*args, **kwargs)
        num_layers = self.backbone.num_layers
        if not 0 < split_layer < num_layers:
            raise ValueError(f'split_layer must be in (0, {num_layers}), got {split_layer}')
        if any(not 0 <= i <= split_layer for i in fusion_layers):
            raise ValueError(f'fusion_layers must be in [0, split_layer={split_layer}], got '
                             f'{fusion_layers}')
        if clip_scale <= 0:
            raise ValueError(f'clip_scale must be positive, got {clip_scale}')
        if self.decode_head.bias_decoder.num_heads != self.backbone.num_heads:
            raise ValueError(f'bias_decoder.num_heads={self.decode_head.bias_decoder.num_heads} '
                             f'must equal the CLIP heads ({self.backbone.num_heads})')
        self.clip_scale = clip_scale
        self.fusion_layers = tuple(fusion_layers)
        self.split_layer = split_layer

    def extract_feat(self, inputs: Tensor) -> dict:
        """CLIP features for fusion and a recognition callable for the head.

        Returns:
            dict: ``inputs`` (B, 3, H, W), ``class_embeds`` (C, D) and ``feats`` with
            ``clip_feats`` (one (B, D_clip, h', w') map per fusion layer), ``clip_hw`` and
            ``recognize(attn_bias (B, heads, Q, h'*w')) -> (B, Q, D)`` that runs the CLIP
            blocks from ``split_layer`` on with SLS tokens (copies of CLS) and projects them
            with ``ln_post``/``proj``.
        """
        if inputs.dim() != 4:
            raise ValueError(f'expected (B, 3, H, W) images, got {tuple(inputs.shape)}')
        clip_inputs = inputs
        if self.clip_scale != 1:
            clip_inputs = F.interpolate(inputs, scale_factor=self.clip_scale, mode='bilinear',
                                        align_corners=False)
        backbone = self.backbone
        tokens, hw = backbone.embed(clip_inputs)
        taps = [i - 1 for i in self.fusion_layers if i > 0]
        split_tokens, outs = backbone.forward_blocks(tokens, 0, self.split_layer, taps)
        clip_feats = [
            backbone.tokens_to_map(tokens if i == 0 else outs[i - 1], hw)
            for i in self.fusion_layers
        ]

        def recognize(attn_bias: Tensor) -> Tensor:
            sls, _ = backbone.forward_sls(split_tokens, attn_bias, self.split_layer,
                                          return_visual=False)
            return backbone.project(sls)

        return dict(
            inputs=inputs,
            feats=dict(clip_feats=clip_feats, clip_hw=hw, recognize=recognize),
            class_embeds=self.inference_class_embeds(inputs))
