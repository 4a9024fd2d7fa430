import collections
import copy
import itertools
import warnings
from contextlib import contextmanager
from typing import Callable, List, Optional, Sequence, Union

import torch
import torch.nn as nn
from mmengine.config import ConfigDict
from mmseg.models.segmentors import EncoderDecoder
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample
from mmseg.utils import ConfigType, OptSampleList, SampleList
from torch import Tensor

from ...clip.templates import get_templates
from ...clip.vocabularies import get_vocabulary
from . import dense_inference
from .dense_inference import DEFAULT_BATCH_WINDOWS, window_spans  # noqa: F401 (re-exported)

#: (vocabulary, templates) entries kept by :meth:`TextEncoderDecoder.cached_text_embeddings`
#: (switching between a few vocabularies, e.g. seen / all classes, does not recompute).
TEXT_CACHE_SIZE = 8


@MODELS.register_module()
class TextEncoderDecoder(EncoderDecoder):
    """mmseg ``EncoderDecoder`` that segments into an open vocabulary of class names.

    The shared base of the CLIP papers in this package (SAN, ZegCLIP, DenseCLIP, ...): the
    classes are text, embedded once by a CLIP text encoder, and the decode head classifies
    pixels against those embeddings instead of a fixed ``conv_seg``. Loss, auxiliary heads
    and ``_forward`` are mmseg's, unchanged; :meth:`extract_feat` returns a dict that every
    decode head here takes::

        dict(inputs=(B, 3, H, W) image, feats=<backbone (+neck) outputs>,
             class_embeds=(C, D) L2-normalised text embeddings)

    Class embeddings have one owner, this class. The vocabulary and the templates are
    resolved once, when set (:meth:`set_vocabulary`); :meth:`text_embeddings` runs the text
    encoder on them (the override point of papers whose text differs: DenseCLIP's raw CoOp
    features); :meth:`cached_text_embeddings` keeps its results per (vocabulary, templates)
    until any text-encoder tensor changes (optimizer step, ``load_state_dict``, ``.to()``
    bump the tensors' versions or move them). So a frozen encoder (``OVCLIPTextEncoder``)
    runs once per vocabulary in training and inference alike, and a trainable one (any
    parameter with ``requires_grad``: CoOp ``ContextCLIPTextEncoder``) at every training
    step, in eval mode once per vocabulary and weights. :meth:`_post_text` adapts the
    cached embeddings per call (ZegCLIP: only the seen classes while training). All slide
    windows of one :meth:`inference` call share one result (:meth:`memo_text`).

    Inference follows mmseg's ``test_cfg`` (``mode='whole'`` or ``'slide'`` with
    ``crop_size`` and ``stride``) with two additions:

    - ``batch_windows`` (int, default :data:`DEFAULT_BATCH_WINDOWS` = 4): slide windows run
      this many at a time through the network (windows of all images in the batch, in
      mmseg's order). The scores equal mmseg's one-window-at-a-time ``slide_inference`` up to
      float rounding of batched kernels; memory grows with it by one window's activations
      and ``(C, h_crop, w_crop)`` scores per extra window. The window sums are added in place
      (mmseg pads every window's scores to the whole image first).
    - ``keep_logits`` (bool, default True): False keeps only ``pred_sem_seg`` in the results
      (no ``seg_logits``); the scores are then resized to the original image a chunk of
      classes at a time with a running argmax, so the ``(C, H_ori, W_ori)`` score map never
      exists: for large images (e.g. 171 classes at 4000x3000 are 8.2 GB in float32).

    Args:
        backbone (dict): backbone config.
        text_encoder (dict): text encoder config, built from ``MODELS``.
        decode_head (dict): decode head config; its ``num_classes`` (and ``out_channels``)
            are set to the vocabulary size.
        vocabulary (str | list[str]): class names, any spec of ``get_vocabulary`` (a dataset
            name such as ``'synthetic'``, a list, a ``.txt`` path, a comma-separated string).
            Usually the train dataset's classes.
        templates (str | list[str], optional): prompt templates (any spec of
            ``get_templates``) for a text encoder that ensembles templates, the one place
            to set them (they become the encoder's default too); None uses the encoder's
            default (``OVCLIPTextEncoder(templates=...)``).
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
        self._vocabulary = classes
        self._dataset_meta = None
        self.templates = templates
        # The one cache of text embeddings: (vocabulary, templates, inference mode) ->
        # embeddings, valid while the text-encoder tensors keep the versions of _text_stamp.
        self._text_cache = collections.OrderedDict()
        self._text_stamp = None
        # Text features computed once per inference call (see _text_once); None outside.
        self._text_memo = None

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
    def vocabulary(self) -> List[str]:
        """The class names, in label order. Assigning a new list is :meth:`set_vocabulary`
        (decode head size and :attr:`dataset_meta` follow)."""
        return self._vocabulary

    @vocabulary.setter
    def vocabulary(self, classes: Union[str, Sequence[str]]) -> None:
        self.set_vocabulary(classes)

    @property
    def dataset_meta(self) -> dict:
        """mmseg's ``dataset_meta`` (``classes``, ``palette``), always those of the current
        vocabulary.

        mmseg's ``init_model``, ``MMSegInferencer`` and ``show_result_pyplot`` label pictures
        with ``model.dataset_meta``; ``init_model`` sets it from the checkpoint. A palette
        set here is kept while its classes are the vocabulary's; after a vocabulary change
        (or when the set classes differ from the vocabulary) the palette is keyed by class
        name (:func:`mmseg_ovseg.apis.palette.class_palette`). Other keys that were set
        (e.g. ``reduce_zero_label``) are kept.
        """
        from ...apis.palette import class_palette
        meta = dict(self._dataset_meta or {})
        classes = list(self._vocabulary)
        palette = meta.get('palette')
        same = meta.get('classes') is not None and list(meta['classes']) == classes
        if not same or palette is None or len(palette) != len(classes):
            palette = class_palette(classes)
        meta.update(classes=classes, palette=[list(c) for c in palette])
        return meta

    @dataset_meta.setter
    def dataset_meta(self, meta: dict) -> None:
        if meta is not None and not isinstance(meta, dict):
            raise TypeError(f'dataset_meta must be a dict, got {type(meta).__name__}')
        classes = None if meta is None else meta.get('classes')
        if classes is not None and list(classes) != list(self._vocabulary):
            warnings.warn(f'{type(self).__name__}: dataset_meta classes ({len(classes)}, e.g. '
                          f'{list(classes)[:3]}) differ from the model vocabulary '
                          f'({len(self._vocabulary)}, e.g. {self._vocabulary[:3]}); '
                          'predicted labels '
                          "index the vocabulary, so dataset_meta['classes'] stays the "
                          'vocabulary. Use set_vocabulary() to change the classes.')
        self._dataset_meta = None if meta is None else dict(meta)

    # ------------------------------------------------------------------ text
    @property
    def templates(self) -> Optional[List[str]]:
        """The prompt templates (a resolved list; None for encoders without templates, e.g.
        learned contexts). Assigning a spec resolves it; None keeps the current ones.

        The segmentor owns the templates (configs set them here only): an assigned spec also
        becomes the encoder's default, so ``text_encoder.encode(names)`` called outside the
        model prompts the same way. They are stored once, as the encoder's ``templates``."""
        templates = getattr(self.text_encoder, 'templates', None)
        return None if templates is None else list(templates)

    @templates.setter
    def templates(self, spec: Union[str, Sequence[str], None]) -> None:
        if spec is None:  # keep the encoder's
            return
        if getattr(self.text_encoder, 'templates', None) is None:
            raise ValueError(
                f'TextEncoderDecoder: templates={spec!r} given, but the text encoder '
                f'{type(self.text_encoder).__name__} does not ensemble prompt templates '
                '(it learns its context); remove model.templates')
        self.text_encoder.templates = get_templates(spec)

    def _text_trainable(self) -> bool:
        return any(p.requires_grad for p in self.text_encoder.parameters())

    def text_embeddings(self) -> Tensor:
        """The text encoder on the current vocabulary, uncached (the override point).

        Returns:
            Tensor: ``(C, D)`` L2-normalised class embeddings: a template-ensembling encoder
            (``OVCLIPTextEncoder.embed``) with :attr:`templates`, otherwise
            ``text_encoder(vocabulary)`` (CoOp contexts).
        """
        embed = getattr(self.text_encoder, 'embed', None)
        if embed is not None:
            return embed(self.vocabulary, self.templates)
        return self.text_encoder(self.vocabulary)

    def cached_text_embeddings(self) -> Tensor:
        """:meth:`text_embeddings` through the cache (see the class docstring).

        A trainable encoder in training mode is run at every call, with gradient; otherwise
        the result is computed once under ``no_grad`` and kept per (vocabulary, templates,
        inference mode) -- inference-mode tensors cannot enter autograd later -- until a
        text-encoder tensor changes. Do not modify the returned tensor in place.
        """
        encoder = self.text_encoder
        if self.training and self._text_trainable():
            return self.text_embeddings()
        stamp = tuple((t.data_ptr(), t._version)
                      for t in itertools.chain(encoder.parameters(), encoder.buffers()))
        if stamp != self._text_stamp:
            self._text_cache.clear()
            self._text_stamp = stamp
        templates = None if self.templates is None else tuple(self.templates)
        key = (tuple(self.vocabulary), templates, torch.is_inference_mode_enabled())
        embeds = self._text_cache.pop(key, None)
        if embeds is None:
            with torch.no_grad():
                embeds = self.text_embeddings()
        self._text_cache[key] = embeds  # most recently used last
        while len(self._text_cache) > TEXT_CACHE_SIZE:
            self._text_cache.popitem(last=False)
        return embeds

    def _post_text(self, embeds: Tensor) -> Tensor:
        """Hook on the cached embeddings of every :attr:`class_embeddings` read (identity)."""
        return embeds

    @property
    def class_embeddings(self) -> Tensor:
        """``(C, D)`` L2-normalised text embeddings of the current vocabulary."""
        return self._post_text(self.cached_text_embeddings())

    def _check_vocabulary(self, classes: List[str]) -> None:
        """Hook: refuse a resolved vocabulary the model cannot take (nothing here)."""

    def set_vocabulary(self, classes: Union[str, Sequence[str]],
                       templates: Union[str, Sequence[str], None] = None) -> None:
        """Switch the open vocabulary (and optionally the templates) of the segmentor.

        Both specs are resolved here, once. Output channels of the decode head follow the
        new class count, and :attr:`dataset_meta` the new names (palette keyed by name), so
        mmseg's visualizers label pictures with them. Auxiliary heads with a fixed
        ``conv_seg`` keep their classes (they are only used in training).
        """
        classes = self._resolve_vocabulary(classes)
        self._check_vocabulary(classes)
        if templates is not None:
            self.templates = templates
        self._vocabulary = classes
        num_classes = len(classes)
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
        return dict(inputs=inputs, feats=feats, class_embeds=self.inference_class_embeds(inputs))

    # -------------------------------------------------------------- inference
    @contextmanager
    def _text_once(self):
        """Within the block, :meth:`memo_text` computes each text feature once (the slide
        windows of one :meth:`inference` call share the class embeddings)."""
        if getattr(self, '_text_memo', None) is not None:  # nested: the outer block owns it
            yield
            return
        self._text_memo = {}
        try:
            yield
        finally:
            self._text_memo = None

    def memo_text(self, key: str, compute: Callable[[], Tensor]) -> Tensor:
        """``compute()``, once per :meth:`inference` call for each ``key``; outside inference
        every call computes."""
        memo = getattr(self, '_text_memo', None)
        if memo is None:
            return compute()
        if key not in memo:
            memo[key] = compute()
        return memo[key]

    def inference_class_embeds(self, inputs: Tensor) -> Tensor:
        """:attr:`class_embeddings` on ``inputs``' device, once per :meth:`inference` call."""
        return self.memo_text('class_embeds', lambda: self.class_embeddings).to(inputs.device)

    def inference(self, inputs: Tensor, batch_img_metas: List[dict]) -> Tensor:
        """mmseg's whole/slide inference with the text features computed once per call."""
        with self._text_once():
            return super().inference(inputs, batch_img_metas)

    def slide_inference(self, inputs: Tensor, batch_img_metas: List[dict]) -> Tensor:
        """Sliding-window scores ``(B, C, H, W)``, ``test_cfg.batch_windows`` windows per
        forward (:func:`~.dense_inference.slide_inference`: mmseg's windows, order and
        averaging, up to float rounding of batched kernels)."""
        return dense_inference.slide_inference(self.encode_decode, inputs, batch_img_metas,
                                               self.test_cfg, self.out_channels)

    def _argmax_classes(self, logits: Tensor) -> Tensor:
        """``(C, H, W)`` scores -> ``(1, H, W)`` class indices (on the scores' integer bit
        patterns with ``nonnegative_scores``: :func:`~.dense_inference.argmax_classes`)."""
        return dense_inference.argmax_classes(logits, self.nonnegative_scores)

    def postprocess_result(self, seg_logits: Tensor,
                           data_samples: OptSampleList = None) -> SampleList:
        """mmseg's postprocessing, skipping its resize when nothing is to be resized, and
        with ``test_cfg.keep_logits=False`` without the full-size score map.

        mmseg always resizes the unpadded scores to ``ori_shape`` (bilinear,
        ``align_corners=False``); at equal size that is an exact identity that still reads
        and writes the whole (C, H, W) map (~0.3 s for 171 classes at 640x640 on 2 CPU
        threads). Flipped, padded or resized samples go through mmseg's code, unless
        ``keep_logits`` is False: then each sample gets only ``pred_sem_seg``, computed from
        the same resized scores a chunk of classes at a time
        (:func:`~.dense_inference.resized_argmax`).
        """
        keep_logits = self.test_cfg.get('keep_logits', True)
        if not isinstance(keep_logits, bool):
            raise ValueError(f'test_cfg.keep_logits must be True or False, got '
                             f'{keep_logits!r}')
        batch_size, channels, height, width = seg_logits.shape
        size = (height, width)
        if channels == 1 or (keep_logits and (data_samples is None or not all(
                dense_inference.unchanged(s.metainfo, size) for s in data_samples))):
            data_samples = super().postprocess_result(seg_logits, data_samples)
            if not keep_logits:  # binary heads: the threshold is mmseg's
                for sample in data_samples:
                    del sample.seg_logits
            return data_samples
        if data_samples is None:  # mmseg: no resizing without metas
            data_samples = [SegDataSample() for _ in range(batch_size)]
            metas = [dict(ori_shape=size)] * batch_size
        else:
            metas = [s.metainfo for s in data_samples]
        dense_inference.set_predictions(seg_logits, data_samples, metas, keep_logits,
                                        self.nonnegative_scores, self.align_corners)
        return data_samples
