import copy
import warnings
from typing import List, Sequence, Union

import torch
import torch.nn as nn
from mmengine.config import ConfigDict
from mmengine.structures import PixelData
from torch import Tensor

from mmseg.models.segmentors import EncoderDecoder
from mmseg.registry import MODELS
from mmseg.utils import ConfigType, OptSampleList, SampleList

from ...clip.vocabularies import get_vocabulary


# Integer types of the same width as the float types the scores may have.
_SAME_SIZE_INT = {torch.float32: torch.int32, torch.bfloat16: torch.int16, torch.float16: torch.int16}


@MODELS.register_module()
class TextEncoderDecoder(EncoderDecoder):
    """mmseg ``EncoderDecoder`` that segments into an open vocabulary of class names.

    The shared base of the CLIP papers in this package (SAN, ZegCLIP, DenseCLIP, ...): the
    classes are text, embedded once by a CLIP text encoder, and the decode head classifies
    pixels against those embeddings instead of a fixed ``conv_seg``. Everything else (loss,
    whole/slide inference, auxiliary heads, ``_forward``) is mmseg's, unchanged: only
    :meth:`extract_feat` differs, returning a dict that every decode head here takes::

        dict(inputs=(B, 3, H, W) image, feats=<backbone (+neck) outputs>,
             class_embeds=(C, D) L2-normalised text embeddings)

    Embeddings of a frozen text encoder (``OVCLIPTextEncoder.encode``) are cached by the
    encoder per (vocabulary, templates): the text tower runs once per vocabulary, not per
    image. A trainable text encoder (any parameter with ``requires_grad``, e.g. CoOp-style
    ``ContextCLIPTextEncoder``) is called as ``text_encoder(vocabulary)`` at every step.

    Args:
        backbone (dict): backbone config.
        text_encoder (dict): text encoder config, built from ``MODELS``.
        decode_head (dict): decode head config; its ``num_classes`` (and ``out_channels``)
            are set to the vocabulary size.
        vocabulary (str | list[str]): class names, any spec of ``get_vocabulary`` (a dataset
            name such as ``'synthetic'``, a list, a ``.txt`` path, a comma-separated string).
            Usually the train dataset's classes.
        templates (str | list[str], optional): prompt templates passed to the text encoder;
            None uses the encoder's default.
        **kwargs: other :class:`EncoderDecoder` arguments (``neck``, ``auxiliary_head``,
            ``train_cfg``, ``test_cfg``, ``data_preprocessor``, ``init_cfg``).
    """

    #: Subclasses whose decode head only produces scores >= 0 (SAN's Eq. 4) set this, which
    #: lets :meth:`postprocess_result` take the argmax on the scores' integer bit patterns.
    nonnegative_scores = False

    def __init__(self,
                 backbone: ConfigType,
                 text_encoder: ConfigType,
                 decode_head: ConfigType,
                 vocabulary: Union[str, Sequence[str], None] = None,
                 templates: Union[str, Sequence[str], None] = None,
                 auxiliary_head: Union[ConfigType, List[ConfigType], None] = None,
                 **kwargs):
        if vocabulary is None:
            raise ValueError('TextEncoderDecoder needs a vocabulary: set model.vocabulary '
                             "to the training classes (e.g. 'synthetic', 'ade150' or a list "
                             'of names)')
        classes = self._resolve_vocabulary(vocabulary)
        decode_head = self._with_num_classes(decode_head, len(classes))
        if isinstance(auxiliary_head, (list, tuple)):
            auxiliary_head = [self._with_num_classes(h, len(classes)) for h in auxiliary_head]
        elif auxiliary_head is not None:
            auxiliary_head = self._with_num_classes(auxiliary_head, len(classes))
        super().__init__(
            backbone=backbone, decode_head=decode_head, auxiliary_head=auxiliary_head,
            **kwargs)
        # mmseg's inference reads test_cfg.mode (attribute access): a plain dict or None from
        # a model built outside a config file becomes a ConfigDict, whole-image by default.
        self.test_cfg = ConfigDict(self.test_cfg or dict(mode='whole'))
        self.text_encoder = MODELS.build(text_encoder)
        self.vocabulary = classes
        self.templates = templates

    @staticmethod
    def _resolve_vocabulary(vocabulary) -> List[str]:
        classes = list(get_vocabulary(vocabulary))
        if not classes:
            raise ValueError(f'TextEncoderDecoder: vocabulary {vocabulary!r} is empty')
        return classes

    @staticmethod
    def _with_num_classes(head_cfg: ConfigType, num_classes: int) -> ConfigType:
        """Copy of a head config with ``num_classes`` (and a non-binary ``out_channels``)."""
        head_cfg = copy.deepcopy(head_cfg)
        head_cfg['num_classes'] = num_classes
        if head_cfg.get('out_channels', None) not in (None, 1):
            head_cfg['out_channels'] = num_classes
        return head_cfg

    @property
    def class_embeddings(self) -> Tensor:
        """``(C, D)`` L2-normalised text embeddings of the current vocabulary."""
        encoder = self.text_encoder
        if any(p.requires_grad for p in encoder.parameters()):
            return encoder(self.vocabulary)
        return encoder.encode(self.vocabulary, self.templates)

    def set_vocabulary(self, classes: Union[str, Sequence[str]],
                       templates: Union[str, Sequence[str], None] = None) -> None:
        """Switch the open vocabulary (and optionally the templates) of the segmentor.

        Output channels of the decode head follow the new class count. Auxiliary heads with
        a fixed ``conv_seg`` keep their classes (they are only used in training).
        """
        self.vocabulary = self._resolve_vocabulary(classes)
        if templates is not None:
            self.templates = templates
        num_classes = len(self.vocabulary)
        heads = [self.decode_head]
        if self.with_auxiliary_head:
            aux = self.auxiliary_head
            heads += list(aux) if isinstance(aux, nn.ModuleList) else [aux]
        for head in heads:
            if hasattr(head, 'conv_seg'):
                if head.num_classes != num_classes:
                    warnings.warn(f'{type(head).__name__} has a fixed conv_seg for '
                                  f'{head.num_classes} classes; it is not text-aware and '
                                  f'cannot follow a {num_classes}-class vocabulary')
                continue
            head.num_classes = num_classes
            if head.out_channels != 1:
                head.out_channels = num_classes
        self.num_classes = self.decode_head.num_classes
        self.out_channels = self.decode_head.out_channels

    def extract_feat(self, inputs: Tensor) -> dict:
        """Backbone (+ neck) features with the class embeddings (see class docstring)."""
        feats = self.backbone(inputs)
        if self.with_neck:
            feats = self.neck(feats)
        return dict(inputs=inputs, feats=feats,
                    class_embeds=self.class_embeddings.to(inputs.device))

    def _argmax_classes(self, logits: Tensor) -> Tensor:
        """``(C, H, W)`` scores -> ``(1, H, W)`` class indices.

        With ``nonnegative_scores`` the argmax runs on the IEEE bit patterns read as integers:
        for non-negative floats they order as the values do, and an integer argmax is about
        2x (float32) to 4x (bfloat16) faster on CPU than a float one.
        """
        int_dtype = _SAME_SIZE_INT.get(logits.dtype) if self.nonnegative_scores else None
        if int_dtype is None:
            return logits.argmax(dim=0, keepdim=True)
        return logits.view(int_dtype).argmax(dim=0, keepdim=True)

    def postprocess_result(self, seg_logits: Tensor,
                           data_samples: OptSampleList = None) -> SampleList:
        """mmseg's postprocessing, skipping its resize when nothing is to be resized.

        mmseg always resizes the unpadded scores to ``ori_shape`` (bilinear,
        ``align_corners=False``); at equal size that is an exact identity that still reads
        and writes the whole (C, H, W) map (~0.3 s for 171 classes at 640x640 on 2 CPU
        threads). Flipped, padded or resized samples go through mmseg's code.
        """
        size = tuple(seg_logits.shape[-2:])

        def unchanged(meta: dict) -> bool:
            padding = meta.get('img_padding_size', meta.get('padding_size', [0] * 4))
            return (not meta.get('flip', False) and not any(padding)
                    and tuple(meta.get('ori_shape', ())) == size)

        if data_samples is None or seg_logits.shape[1] == 1 or not all(
                unchanged(s.metainfo) for s in data_samples):
            return super().postprocess_result(seg_logits, data_samples)
        for logits, sample in zip(seg_logits, data_samples):
            sample.set_data(dict(seg_logits=PixelData(data=logits),
                                 pred_sem_seg=PixelData(data=self._argmax_classes(logits))))
        return data_samples
