"""SAN segmentor: asymmetric-resolution CLIP interleaved with the side adapter head.

Side Adapter Network (Xu et al., CVPR 2023, https://arxiv.org/abs/2302.12242), Fig. 2/3:
the frozen CLIP ViT sees the image at a reduced scale (0.5 for ViT-B/16: 640 -> 320, 0.7 for
ViT-L/14: 640 -> 448, position embeddings resized), its post-``ln_pre`` embedding and some
layer outputs are fused into the side adapter (which sees full scale), and its layers from the
split on run the SLS tokens steered by the side adapter's attention bias (Sec. 3.3).

The segmentor walks Fig. 2 itself, as the official ``SAN.forward`` does:

1. :meth:`SAN.extract_feat`: CLIP up to the split (fusion maps, tokens at the split);
2. ``SANHead.forward``: side adapter -> mask proposals and attention biases;
3. :meth:`SAN.recognize`: CLIP's last blocks with SLS tokens steered by each bias;
4. ``SANHead.classify``: mask embeddings vs. class text embeddings (+ background);
5. ``SANHead.predict_by_feat``: Eq. 4 (or ``SANHead.loss_by_feat`` in training).
"""
from typing import List, Optional, Sequence, Tuple

import torch.nn.functional as F
from mmseg.registry import MODELS
from mmseg.utils import OptSampleList, SampleList, add_prefix
from torch import Tensor

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

    # ------------------------------------------------------------------ Fig. 2, step by step
    def extract_feat(self, inputs: Tensor) -> dict:
        """Step 1: CLIP on the downscaled image, up to the split layer.

        Args:
            inputs (Tensor): (B, 3, H, W) images.

        Returns:
            dict: ``inputs`` (B, 3, H, W), ``class_embeds`` (C, D) and ``feats`` with
            ``clip_feats`` (one (B, D_clip, h', w') map per fusion layer, for the side
            adapter), ``clip_hw`` (h', w') and ``split_tokens`` (B, 1 + h'*w', D_clip), the
            tokens entering block ``split_layer`` (for :meth:`recognize`). Tensors only.
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
        return dict(
            inputs=inputs,
            feats=dict(clip_feats=clip_feats, clip_hw=hw, split_tokens=split_tokens),
            class_embeds=self.inference_class_embeds(inputs))

    def recognize(self, split_tokens: Tensor, attn_bias: Tensor) -> Tensor:
        """Step 3: CLIP's blocks from ``split_layer`` on with SLS tokens (Sec. 3.3).

        Args:
            split_tokens (Tensor): (B, 1 + h'*w', D_clip) from :meth:`extract_feat`.
            attn_bias (Tensor): (B, heads, Q, h'*w') bias on the CLIP grid.

        Returns:
            Tensor: (B, Q, D) mask embeddings: the SLS tokens (copies of CLS at the split)
            after ``ln_post``/``proj``, not normalised. The visual tokens' last block is
            skipped (only its keys/values are needed).
        """
        sls, _ = self.backbone.forward_sls(split_tokens, attn_bias, self.split_layer,
                                           return_visual=False)
        return self.backbone.project(sls)

    def decode(self, feats: dict, deep_supervision: Optional[bool] = None
               ) -> Tuple[List[Tensor], List[Tensor]]:
        """Steps 2-4 on the output of :meth:`extract_feat`.

        2. side adapter (fused with ``clip_feats``): mask proposals and attention biases of
           each supervised side block (:meth:`SANHead.forward`);
        3. each bias max-pooled to the CLIP grid steers the SLS tokens (:meth:`recognize`);
        4. the mask embeddings are classified against the class text embeddings and the
           background (:meth:`SANHead.classify`).

        Args:
            feats (dict): from :meth:`extract_feat`.
            deep_supervision (bool): also the auxiliary outputs (default: in training).

        Returns:
            tuple[list[Tensor], list[Tensor]]: class logits (B, Q, C+1) and mask logits
            (B, Q, H/16, W/16) per supervised side block, auxiliary ones first (the order of
            the mask-classification heads here: ``ATMHead``, Mask2Former).
        """
        head = self.decode_head
        clip = feats['feats']
        all_masks, all_biases = head(feats, deep_supervision)
        all_cls = []
        for bias in all_biases:
            bias = head.pool_bias(bias, clip['clip_hw'])  # (B, heads, Q, h'*w')
            mask_embeds = self.recognize(clip['split_tokens'], bias)
            all_cls.append(head.classify(mask_embeds, feats['class_embeds']))
        return all_cls, all_masks

    def encode_decode(self, inputs: Tensor, batch_img_metas: List[dict]) -> Tensor:
        """Steps 1-5: (B, 3, H, W) images -> (B, C, H_pad, W_pad) Eq. 4 scores of the final
        side block."""
        all_cls, all_masks = self.decode(self.extract_feat(inputs), deep_supervision=False)
        return self.decode_head.predict_by_feat((all_cls[-1], all_masks[-1]), batch_img_metas)

    def _decode_head_forward_train(self, inputs: dict, data_samples: SampleList) -> dict:
        """Losses (``decode.*``) of the final and the deeply supervised side blocks."""
        seg_logits = self.decode(inputs, deep_supervision=True)
        return add_prefix(self.decode_head.loss_by_feat(seg_logits, data_samples), 'decode')

    def _forward(self, inputs: Tensor, data_samples: OptSampleList = None
                 ) -> Tuple[List[Tensor], List[Tensor]]:
        """Raw outputs (mmseg's ``mode='tensor'``): :meth:`decode` of the images."""
        return self.decode(self.extract_feat(inputs))
