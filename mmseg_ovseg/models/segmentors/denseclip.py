"""DenseCLIP segmentor: language-guided dense prediction with context-aware prompting.

`DenseCLIP <https://arxiv.org/abs/2112.01518>`_ (Rao et al., CVPR 2022):

- Sec. 3.2, language-guided dense prediction: the CLIP image encoder gives stage maps, a dense
  language-compatible map ``z (B, C, h, w)`` and the global embedding ``z_bar (B, C)``; the
  pixel-text score map ``s = z_hat t_hat^T`` (both L2-normalised along channels) is
  concatenated to a stage map (C5 for ResNets) before the segmentation neck, so the dense
  predictor sees the language prior explicitly. For the ViT-B/16 variant the four
  single-scale ViT maps first pass through the official ``fpn1``-``fpn4`` adapters
  (:class:`FPNAdapter`, 1/4..1/32), and the score map joins the 1/16 level.
- Sec. 3.3, context-aware prompting: the text features ``t (K, C)`` come from CLIP's text
  encoder with learnable context vectors (language-domain prompting, CoOp) and are refined by
  the :class:`ContextDecoder` from the visual context ``[z_bar; z]`` (post-model prompting):
  ``t <- t + gamma * TransDecoder(t, [z_bar; z])``. Optionally (``pre_prompting``), the
  paper's pre-model variant: :class:`PreModelPrompting` turns the visual context into the text
  encoder's context tokens, ``v_pre = TransDecoder(q, [z_bar; z])``, ``y_k = [v_pre, e_k]``,
  and the text tower runs per image.
- Sec. 3.4, semantic segmentation: any mmseg segmentation neck/head (Semantic FPN: mmseg's
  ``FPN`` + ``FPNHead``) on the augmented features, plus an auxiliary cross-entropy on
  ``s / tau`` (``tau = 0.07``) through an :class:`IdentityHead`.
"""
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from mmseg.registry import MODELS
from mmseg.utils import ConfigType, SampleList, add_prefix
from torch import Tensor

from .text_encoder_decoder import TextEncoderDecoder


@MODELS.register_module()
class DenseCLIP(TextEncoderDecoder):
    """DenseCLIP segmentor (closed-set, as in the paper): CLIP image encoder + text encoder
    with learnable context + context decoder + score-map-augmented Semantic FPN.

    The backbone must return ``(*stage_maps, dense (B, C, h, w), global (B, C))``:
    ``CLIPResNetWithAttention`` (``output_attnpool=True``) or ``CLIPVisionTransformer``
    (``output_dense=True``). The text encoder must take ``(vocabulary, normalize=False)`` and
    return raw ``(K, C)`` text features (``ContextCLIPTextEncoder``). Neck and decode head are
    plain mmseg modules (``FPN``, ``FPNHead``) that take the list of stage maps, the one at
    ``score_concat_index`` carrying ``K`` extra channels (FPN ``in_channels[idx] = C_idx + K``).
    An optional ``adapter`` (:class:`FPNAdapter` for ViTs) maps the backbone's stage maps to
    a pyramid first; as in the official code (where the adapters are the ViT backbone's
    ``fpn1``-``fpn4``), the score map is concatenated to the *adapted* level.

    Unlike the other segmentors of the package, :meth:`extract_feat` returns the neck outputs
    (a list of tensors, what mmseg heads take), not the ``dict(inputs, feats, class_embeds)``.
    With post-model prompting only (the official configs), the text features depend on the
    image only through the context decoder: the text tower runs once per training step and, in
    eval mode, once per vocabulary and weights (cached). With ``pre_prompting`` it runs on the
    ``B x K`` sequences of every batch (or slide-window batch): nothing is cached.

    Args:
        backbone (dict): image encoder config (see above).
        text_encoder (dict): ``ContextCLIPTextEncoder`` config (official: 8 contexts,
            ``context_length=13``, ``name_suffix=''``, ``init_std=1.0``).
        context_decoder (dict | None): :class:`ContextDecoder` config (post-model
            prompting); its ``visual_dim`` must equal the CLIP embed dim ``C``. None: no
            post-model refinement (pre-model prompting alone, or plain CoOp contexts).
        decode_head (dict): mmseg decode head (``FPNHead``), ``num_classes`` set to ``K``.
        neck (dict, optional): mmseg neck (``FPN``). Default: None.
        adapter (dict, optional): module applied to the list of backbone stage maps before
            the score-map concatenation (``FPNAdapter`` for the ViT-B/16 variant: four
            ``(B, 768, H/16, W/16)`` maps -> strides 4, 8, 16, 32). Default: None (ResNets).
        pre_prompting (dict, optional): :class:`PreModelPrompting` config (pre-model
            prompting); its ``num_queries`` / ``token_dim`` must equal the text encoder's
            ``num_contexts`` / token width, which it replaces per image (the text encoder's
            own ``contexts`` are then unused and frozen). Default: None.
        identity_head (dict, optional): auxiliary head on ``score_map / tau``
            (``IdentityHead`` with cross-entropy weight 0.4 in the official recipe); its losses
            are prefixed ``aux_identity.``. Default: None.
        score_concat_index (int): stage map receiving the score map (3 = C5 for ResNets, 2
            for the official ViT). Default: 3.
        tau (float): temperature of the auxiliary score-map loss. Default: 0.07.
        auxiliary_head (dict | list, optional): mmseg auxiliary heads on the neck outputs
            (unused by the official configs). Default: None.
        **kwargs: :class:`TextEncoderDecoder` arguments (``vocabulary``, ``train_cfg``,
            ``test_cfg``, ``data_preprocessor``, ``init_cfg``).
    """

    def __init__(self,
                 backbone: ConfigType,
                 text_encoder: ConfigType,
                 context_decoder: Optional[ConfigType],
                 decode_head: ConfigType,
                 neck: Optional[ConfigType] = None,
                 adapter: Optional[ConfigType] = None,
                 pre_prompting: Optional[ConfigType] = None,
                 identity_head: Optional[ConfigType] = None,
                 score_concat_index: int = 3,
                 tau: float = 0.07,
                 **kwargs):
        super().__init__(backbone=backbone, text_encoder=text_encoder,
                         decode_head=decode_head, neck=neck, **kwargs)
        if tau <= 0:
            raise ValueError(f'DenseCLIP: tau must be positive, got {tau}')
        self.context_decoder = None
        if context_decoder is not None:
            self.context_decoder = MODELS.build(context_decoder)
        self.pre_prompting = None
        if pre_prompting is not None:
            self.pre_prompting = MODELS.build(pre_prompting)
            # replaced by the per-image v_pre: keep it out of the optimizer
            self.text_encoder.contexts.requires_grad_(False)
        self.adapter = MODELS.build(adapter) if adapter is not None else None
        self.identity_head = None
        if identity_head is not None:
            self.identity_head = MODELS.build(
                self._with_num_classes(identity_head, len(self.vocabulary)))
        self.score_concat_index = score_concat_index
        self.tau = tau
        self._check_channels()

    @property
    def with_identity_head(self) -> bool:
        return self.identity_head is not None

    @property
    def with_adapter(self) -> bool:
        return self.adapter is not None

    @property
    def with_pre_prompting(self) -> bool:
        return self.pre_prompting is not None

    def _check_channels(self) -> None:
        """Fail at build time, with a readable message, on inconsistent widths."""
        text_dim = getattr(self.text_encoder, 'embed_dims', None)
        for name in ('context_decoder', 'pre_prompting'):
            visual_dim = getattr(getattr(self, name), 'visual_dim', None)
            if None not in (text_dim, visual_dim) and text_dim != visual_dim:
                raise ValueError(f'DenseCLIP: text features have {text_dim} channels but '
                                 f'{name}.visual_dim is {visual_dim}')
        if self.with_pre_prompting:
            contexts = getattr(self.text_encoder, 'contexts', None)
            if contexts is None:
                raise ValueError('DenseCLIP: pre_prompting needs a text encoder with context '
                                 'tokens (ContextCLIPTextEncoder)')
            expected = (self.pre_prompting.num_queries, self.pre_prompting.token_dim)
            if tuple(contexts.shape) != expected:
                raise ValueError(f'DenseCLIP: pre_prompting makes {expected[0]} tokens of '
                                 f'width {expected[1]}, but the text encoder has '
                                 f'{contexts.shape[0]} contexts of width {contexts.shape[1]}')
        stages = getattr(self.backbone, 'stage_channels', None)
        out_indices = getattr(self.backbone, 'out_indices', None)
        in_channels = getattr(self.neck, 'in_channels', None) if self.with_neck else None
        if self.with_adapter:
            # the neck sees the adapter's levels (a ViT's stage maps all have its width)
            adapted = getattr(self.adapter, 'out_channels', None)
            width = getattr(self.backbone, 'width', None)
            if out_indices is not None and width is not None and \
                    getattr(self.adapter, 'in_channels', width) != width:
                raise ValueError(f'DenseCLIP: adapter.in_channels is '
                                 f'{self.adapter.in_channels} but the backbone maps have '
                                 f'{width} channels')
            if out_indices is not None and adapted is not None and \
                    len(adapted) != len(out_indices):
                raise ValueError(f'DenseCLIP: the adapter has {len(adapted)} levels for '
                                 f'{len(out_indices)} backbone maps (out_indices)')
            stages, out_indices = adapted, None if adapted is None else range(len(adapted))
        if stages is None or out_indices is None or in_channels is None:
            return
        expected = [stages[i] for i in out_indices]
        if not 0 <= self.score_concat_index < len(expected):
            raise ValueError(f'DenseCLIP: score_concat_index {self.score_concat_index} is out '
                             f'of range for {len(expected)} stage maps')
        expected[self.score_concat_index] += len(self.vocabulary)
        if list(in_channels) != expected:
            raise ValueError(f'DenseCLIP: neck.in_channels must be {expected} (stage '
                             f'channels, + {len(self.vocabulary)} score-map channels at index '
                             f'{self.score_concat_index}), got {list(in_channels)}')

    # ------------------------------------------------------------------ text
    def text_embeddings(self) -> Tensor:
        """``(K, C)`` raw (un-normalised) text features of the context-prompted classes: the
        context decoder takes them before the normalisation (the override point of
        :class:`TextEncoderDecoder`, whose cache keeps them)."""
        return self.text_encoder(self.vocabulary, normalize=False)

    def text_features(self) -> Tensor:
        """``(K, C)`` raw (un-normalised) text features of the current vocabulary.

        Recomputed with gradient in training; in eval mode computed once under ``no_grad`` and
        cached until the vocabulary or any text-encoder tensor changes (optimizer steps and
        ``load_state_dict`` bump the tensors' version counters):
        :meth:`TextEncoderDecoder.cached_text_embeddings`.
        """
        return self.cached_text_embeddings()

    # ------------------------------------------------------------------ features
    def forward_features(self, inputs: Tensor) -> Tuple[List[Tensor], Tensor, Tensor]:
        """Backbone, context-aware text, score map and the augmented stage maps.

        Args:
            inputs (Tensor): ``(B, 3, H, W)`` images.

        Returns:
            tuple: ``stage_maps`` (list of the backbone's stage maps, the one at
            ``score_concat_index`` with the score map concatenated along channels; after the
            ``adapter`` when there is one),
            ``score_map (B, K, h, w)`` (cosine similarities in [-1, 1], at the dense map's
            resolution, H/32 for ResNets) and ``text (B, K, C)`` (refined text features).
        """
        feats = self.backbone(inputs)
        if not isinstance(feats, (list, tuple)) or len(feats) < 3:
            raise ValueError('DenseCLIP: the backbone must return (*stage_maps, dense, '
                             'global); use output_attnpool=True / output_dense=True')
        stages, dense, global_feat = list(feats[:-2]), feats[-2], feats[-1]
        if dense.dim() != 4 or global_feat.dim() != 2:
            raise ValueError(f'DenseCLIP: expected dense (B, C, h, w) and global (B, C) '
                             f'backbone outputs, got {tuple(dense.shape)} and '
                             f'{tuple(global_feat.shape)}')
        if self.with_adapter:
            # official order: adapters (the ViT's fpn1-fpn4) first, then the score map
            stages = list(self.adapter(stages))
        # Visual context [z_bar; z]: (B, 1 + h*w, C), the global token first.
        context = torch.cat([global_feat.unsqueeze(1), dense.flatten(2).transpose(1, 2)], 1)
        if self.with_pre_prompting:
            # v_pre (B, N, W) replaces the learnable contexts: every image's K sequences
            # [SOT, v_pre, name, EOT] go through the text tower -> (B, K, C)
            text = self.text_encoder(self.vocabulary, normalize=False,
                                     contexts=self.pre_prompting(context)).to(dense.dtype)
        else:
            # once per inference call (slide windows share it), every call in training
            text = self.memo_text('text_features', self.text_features).to(dense.dtype)
        if self.context_decoder is not None:
            text = self.context_decoder(text, context)  # (B, K, C)
        elif text.dim() == 2:
            text = text.unsqueeze(0).expand(dense.shape[0], -1, -1)
        score_map = torch.einsum('bchw,bkc->bkhw', F.normalize(dense, dim=1),
                                 F.normalize(text, dim=-1))
        idx = self.score_concat_index
        if not -len(stages) <= idx < len(stages):
            raise ValueError(f'DenseCLIP: score_concat_index {idx} out of range for '
                             f'{len(stages)} stage maps')
        target = stages[idx]
        if target.shape[-2:] != score_map.shape[-2:]:
            score = F.interpolate(score_map, size=target.shape[-2:], mode='bilinear',
                                  align_corners=False)
        else:
            score = score_map
        stages[idx] = torch.cat([target, score.to(target.dtype)], dim=1)
        return stages, score_map, text

    def _neck(self, stages: List[Tensor]) -> List[Tensor]:
        return list(self.neck(stages)) if self.with_neck else stages

    def extract_feat(self, inputs: Tensor) -> List[Tensor]:
        """Neck inputs' outputs: what the mmseg decode head takes (see class docstring)."""
        stages, _, _ = self.forward_features(inputs)
        return self._neck(stages)

    # ------------------------------------------------------------------ training
    def loss(self, inputs: Tensor, data_samples: SampleList) -> dict:
        """Losses: ``decode.*`` (FPN head), ``aux_identity.*`` (CE on ``score_map / tau``) and
        ``aux.*`` / ``aux_<i>.*`` from optional mmseg auxiliary heads on the neck outputs."""
        stages, score_map, _ = self.forward_features(inputs)
        feats = self._neck(stages)
        losses = dict()
        losses.update(self._decode_head_forward_train(feats, data_samples))
        if self.with_identity_head:
            losses.update(add_prefix(
                self.identity_head.loss(score_map / self.tau, data_samples, self.train_cfg),
                'aux_identity'))
        if self.with_auxiliary_head:
            losses.update(self._auxiliary_head_forward_train(feats, data_samples))
        return losses

    # ------------------------------------------------------------------ vocabulary
    def _check_vocabulary(self, classes: List[str]) -> None:
        """Renaming only: the FPN input has ``C5 + K`` channels and ``FPNHead`` a ``K``-way
        classifier, so DenseCLIP is not open-vocabulary."""
        if len(classes) != len(self.vocabulary):
            raise ValueError(f'DenseCLIP has a fixed number of classes ({len(self.vocabulary)}:'
                             f' score-map channels and FPNHead classifier); got '
                             f'{len(classes)} names')
