"""ReSTR segmentor: referring image segmentation with transformers only.

`ReSTR <https://arxiv.org/abs/2203.16768>`_ (Kim et al., CVPR 2022):

- Sec. 3.1: a ViT (mmseg ``VisionTransformer``, ViT-B/16 at 480) encodes the image into
  patch features ``(B, C, h, w)``; :class:`ReSTRLanguageEncoder` encodes the expression
  (``data_samples[i].metainfo['sentence']``) into word features ``(B, T, C_l)``.
- Sec. 3.2: :class:`ReSTRFusionEncoder` fuses them and classifies every patch with an
  adaptive (expression-specific) classifier: patch logits ``(B, 1, h, w)``.
- Sec. 3.3: :class:`ReSTRCoarseToFineDecoder` refines ``concat[x_v, y_p * p]`` into pixel
  logits ``(B, 1, H, W)``.
- Sec. 3.4: :class:`ReSTRLoss`, pixel BCE + 0.1 x patch BCE.
"""
from typing import Dict, List

import torch
import torch.nn.functional as F
from mmseg.models.segmentors import BaseSegmentor
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample
from mmseg.utils import ConfigType, OptConfigType, OptMultiConfig, OptSampleList, SampleList
from torch import Tensor


@MODELS.register_module()
class ReSTR(BaseSegmentor):
    """Referring segmentor: image + one expression per sample -> binary mask.

    Predictions are 2-class ``seg_logits`` ``(2, H, W)`` = ``[0, z]`` (background,
    object) for the object logit ``z``, so ``argmax`` is object exactly where ``z > 0``
    (the official threshold, ``z >= 1e-9``) and ``softmax(...)[1] = sigmoid(z)``; mmseg's
    visualizer and :class:`ReferringIoUMetric` read ``pred_sem_seg`` (0/1). Padding added by
    the data preprocessor is cropped and the logits resized to ``ori_shape`` with mmseg's
    :meth:`postprocess_result`.

    Args:
        backbone (dict): mmseg ``VisionTransformer`` returning one ``(B, C, h, w)`` map (the
            last one is used) without the class token.
        language_encoder (dict): :class:`ReSTRLanguageEncoder`.
        fusion (dict): :class:`ReSTRFusionEncoder` (``visual_dims`` = ViT width,
            ``language_dims`` = language ``out_dims``).
        decoder (dict): :class:`ReSTRCoarseToFineDecoder` (``in_channels`` = 2 x fusion
            ``embed_dims``).
        loss (dict): :class:`ReSTRLoss`.
        align_corners (bool): of the resize of the decoder output to the input size when they
            differ (official: True). The final resize to ``ori_shape`` uses mmseg's False.
        train_cfg, test_cfg, data_preprocessor, init_cfg: as mmseg segmentors (``test_cfg``
            has no options: ReSTR predicts on the whole padded input).
    """

    def __init__(self,
                 backbone: ConfigType,
                 language_encoder: ConfigType,
                 fusion: ConfigType,
                 decoder: ConfigType,
                 loss: ConfigType = dict(type='ReSTRLoss'),
                 align_corners: bool = True,
                 train_cfg: OptConfigType = None,
                 test_cfg: OptConfigType = None,
                 data_preprocessor: OptConfigType = None,
                 init_cfg: OptMultiConfig = None):
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        self.backbone = MODELS.build(backbone)
        self.language_encoder = MODELS.build(language_encoder)
        self.fusion = MODELS.build(fusion)
        self.decoder = MODELS.build(decoder)
        self.loss_module = MODELS.build(loss)
        self.decoder_align_corners = align_corners
        self.align_corners = False  # used by BaseSegmentor.postprocess_result
        self.train_cfg = train_cfg
        self.test_cfg = test_cfg
        self._check_dims()

    def _check_dims(self) -> None:
        lang = self.language_encoder.out_dims
        if self.fusion.language_dims != lang:
            raise ValueError(f'ReSTR: fusion.language_dims is {self.fusion.language_dims} but '
                             f'the language encoder outputs {lang} channels')
        width = getattr(self.backbone, 'embed_dims', None)
        if width is not None and self.fusion.visual_dims != width:
            raise ValueError(f'ReSTR: fusion.visual_dims is {self.fusion.visual_dims} but the '
                             f'backbone is {width} wide')
        if self.decoder.in_channels != 2 * self.fusion.embed_dims:
            raise ValueError(f'ReSTR: decoder.in_channels must be 2 x fusion.embed_dims = '
                             f'{2 * self.fusion.embed_dims}, got {self.decoder.in_channels}')

    # ------------------------------------------------------------------ inputs
    @staticmethod
    def sentences(data_samples: OptSampleList, batch_size: int) -> List[str]:
        """The expression of every sample (``metainfo['sentence']``)."""
        if data_samples is None or len(data_samples) != batch_size:
            raise ValueError(f'ReSTR: needs one data sample with a sentence per image; got '
                             f'{0 if data_samples is None else len(data_samples)} for '
                             f'{batch_size} images')
        out = []
        for i, sample in enumerate(data_samples):
            meta = sample.metainfo
            if 'sentence' not in meta:
                raise KeyError(f'ReSTR: data sample {i} ({meta.get("img_path", "no img_path")}) '
                               "has no 'sentence' in its metainfo; pack referring samples "
                               'with PackReferringInputs')
            sent = meta['sentence']
            if not isinstance(sent, str) or not sent.strip():
                raise ValueError(f'ReSTR: data sample {i} has an empty or non-string sentence '
                                 f'{sent!r}')
            out.append(sent)
        return out

    # ------------------------------------------------------------------ network
    def extract_feat(self, inputs: Tensor) -> Tensor:
        """Image ``(B, 3, H, W)`` -> last ViT map ``(B, C, H/P, W/P)``."""
        if inputs.dim() != 4:
            raise ValueError(f'ReSTR: inputs must be (B, 3, H, W), got {tuple(inputs.shape)}')
        feats = self.backbone(inputs)
        return feats[-1] if isinstance(feats, (list, tuple)) else feats

    def forward_logits(self, inputs: Tensor, data_samples: OptSampleList) -> Dict[str, Tensor]:
        """``pixel_logits (B, 1, H, W)`` at the input size and ``patch_logits (B, 1, h, w)``."""
        x_v = self.extract_feat(inputs)
        if isinstance(x_v, (list, tuple)):  # (map, cls) when output_cls_token=True
            raise ValueError('ReSTR: the backbone must not output the class token')
        sents = self.sentences(data_samples, inputs.shape[0])
        x_l, valid = self.language_encoder(sents)
        fused = self.fusion(x_v, x_l, valid)
        dec_in = torch.cat([fused['visual'], fused['patch_logits'] * fused['patches']], dim=1)
        pixel = self.decoder(dec_in)
        if pixel.shape[2:] != inputs.shape[2:]:
            pixel = F.interpolate(pixel, size=inputs.shape[2:], mode='bilinear',
                                  align_corners=self.decoder_align_corners)
        return dict(pixel_logits=pixel, patch_logits=fused['patch_logits'])

    def encode_decode(self, inputs: Tensor, batch_img_metas: List[dict]) -> Tensor:
        """2-class logits ``(B, 2, H, W)`` = ``[0, z]``; ``batch_img_metas`` must hold
        ``sentence``."""
        samples = [SegDataSample(metainfo=m) for m in batch_img_metas]
        z = self.forward_logits(inputs, samples)['pixel_logits']
        return torch.cat([torch.zeros_like(z), z], dim=1)

    def _forward(self, inputs: Tensor, data_samples: OptSampleList = None) -> Tensor:
        """Object logits ``(B, 1, H, W)``."""
        return self.forward_logits(inputs, data_samples)['pixel_logits']

    def loss(self, inputs: Tensor, data_samples: SampleList) -> dict:
        out = self.forward_logits(inputs, data_samples)
        gt = torch.stack([s.gt_sem_seg.data for s in data_samples]).long()  # (B, 1, H, W)
        if gt.shape[2:] != inputs.shape[2:]:
            raise ValueError(f'ReSTR: labels {tuple(gt.shape[2:])} and inputs '
                             f'{tuple(inputs.shape[2:])} differ in size')
        return self.loss_module(out['pixel_logits'], out['patch_logits'], gt)

    def predict(self, inputs: Tensor, data_samples: OptSampleList = None) -> SampleList:
        """``SegDataSample`` per image with ``seg_logits (2, H0, W0)`` and ``pred_sem_seg``
        ``(1, H0, W0)`` at the original size (``ori_shape``)."""
        if data_samples is None:
            raise ValueError('ReSTR.predict: data_samples with the sentences are required')
        for s in data_samples:
            if 'ori_shape' not in s.metainfo:
                s.set_metainfo(dict(ori_shape=tuple(inputs.shape[2:])))
        z = self.forward_logits(inputs, data_samples)['pixel_logits']
        return self.postprocess_result(torch.cat([torch.zeros_like(z), z], dim=1), data_samples)
