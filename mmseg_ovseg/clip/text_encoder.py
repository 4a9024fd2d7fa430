"""CLIP text encoders: frozen template-ensembled class embeddings and CoOp learnable context.

Both hold the open_clip text tower's modules at top level under ``open_clip.CLIP``'s names
(``token_embedding``, ``positional_embedding``, ``transformer``, ``ln_final``,
``text_projection`` and the non-persistent ``attn_mask`` buffer), so their state-dict keys are
CLIP checkpoint keys and a segmentor's keys are ``text_encoder.<CLIP key>``.
"""
import hashlib
import json
import os.path as osp
import time
from typing import List, Optional, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.logging import MMLogger
from mmengine.model import BaseModule
from mmseg.registry import MODELS
from open_clip.transformer import text_global_pool

from ..utils.io import torch_save_atomic
from .builder import ClipModel, build_text_tower, load_tower_weights
from .templates import get_templates
from .tokenizer import encode as bpe_encode
from .tokenizer import eot_token_id, sot_token_id, tokenize
from .vocabularies import get_vocabulary


class _CLIPTextTower(BaseModule):
    """The open_clip text tower, flattened into this module like ``open_clip.CLIP``.

    Args:
        clip_model: open_clip model name or config dict (see ``builder.get_clip_config``).
        context_length: token positions used (<= the tower's, 77 for CLIP); a shorter length
            slices the positional embedding and the causal mask (DenseCLIP uses 13).
    """

    def __init__(self,
                 clip_model: ClipModel,
                 context_length: Optional[int] = None,
                 init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        tower = build_text_tower(clip_model)
        if getattr(tower, 'cls_emb', None) is not None:
            raise ValueError(f'{type(self).__name__}: text towers with an appended CLS token '
                             f'(CoCa) are not supported; got model {clip_model!r}')
        self.token_embedding = tower.token_embedding
        self.positional_embedding = tower.positional_embedding
        self.transformer = tower.transformer
        self.ln_final = tower.ln_final
        self.text_projection = tower.text_projection
        self.register_buffer('attn_mask', tower.attn_mask, persistent=False)
        self.text_pool_type = tower.pool_type
        self.text_eos_id = tower.eos_id

        max_length = tower.context_length
        context_length = context_length or max_length
        if not 2 <= context_length <= max_length:
            raise ValueError(f'{type(self).__name__}: context_length must be in [2, '
                             f'{max_length}] for {clip_model!r}, got {context_length}')
        self.context_length = context_length
        if self.text_projection is None:
            self.embed_dims = tower.width
        elif isinstance(self.text_projection, nn.Linear):
            self.embed_dims = self.text_projection.out_features
        else:
            self.embed_dims = self.text_projection.shape[1]

    #: Module keys a CLIP checkpoint cannot hold (parameters the paper adds to the tower).
    _not_in_clip = ()

    def init_weights(self) -> None:
        """mmengine's weight initialisation, then the text-tower weights of ``pretrained``
        (``self.pretrained``, a local CLIP checkpoint), checked and loaded strictly into the
        existing parameters. Not called when a full checkpoint is loaded instead (mmengine's
        Runner calls it before training only)."""
        first = not self.is_init
        super().init_weights()
        if first and getattr(self, 'pretrained', None) is not None:
            load_tower_weights(self, self.pretrained, 'text', ignore_missing=self._not_in_clip)

    @property
    def device(self) -> torch.device:
        return self.token_embedding.weight.device

    def encode_embeddings(self, x: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """Run the tower on token embeddings.

        Args:
            x: (N, L, W) token embeddings, L <= the tower's context length.
            text: (N, L) token ids, used only to find the pooled (EOT) position.

        Returns:
            (N, D) text features, not normalised (``CLIP.encode_text``'s output).
        """
        length = x.shape[1]
        cast_dtype = self.transformer.get_cast_dtype()
        x = x.to(cast_dtype) + self.positional_embedding[:length].to(cast_dtype)
        mask = None if self.attn_mask is None else self.attn_mask[:length, :length]
        x = self.transformer(x, attn_mask=mask)
        x = self.ln_final(x)
        x = text_global_pool(x, text, self.text_pool_type, eos_token_id=self.text_eos_id)
        if isinstance(self.text_projection, nn.Linear):
            x = self.text_projection(x)
        elif self.text_projection is not None:
            x = x @ self.text_projection
        return x

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        """(N, L) token ids -> (N, D) features; equal to open_clip's ``CLIP.encode_text``."""
        if tokens.dim() != 2 or tokens.shape[1] > self.positional_embedding.shape[0]:
            raise ValueError(f'{type(self).__name__}.encode_text: expected (N, L<='
                             f'{self.positional_embedding.shape[0]}) token ids, got '
                             f'{tuple(tokens.shape)}')
        return self.encode_embeddings(self.token_embedding(tokens), tokens)


@MODELS.register_module()
class OVCLIPTextEncoder(_CLIPTextTower):
    """Frozen CLIP text encoder giving one embedding per class name (prompt ensembling).

    Implements the classifier of open-vocabulary segmentation with CLIP (CLIP, Radford et
    al. 2021, Sec. 3.1.4 "prompt engineering and ensembling"; SAN, Xu et al. CVPR 2023,
    Sec. 4.1; ZegCLIP, Zhou et al. CVPR 2023, Sec. 3): each class name is put into every
    template, the sentences are encoded and L2-normalised, averaged over templates and
    renormalised. The tower is frozen and always in eval mode; embeddings are computed once per
    (vocabulary, templates) under ``no_grad`` and cached in memory (cleared whenever weights are
    loaded) and, with ``cache_dir``, on disk keyed by a digest of the tower weights.

    Args:
        clip_model: open_clip model name (``'ViT-B-16'``) or config dict.
        pretrained: local CLIP checkpoint path or None (random weights); loaded strictly by
            :meth:`init_weights` (mmengine's convention: the Runner calls it before training;
            a model that then loads a full checkpoint never reads this file).
        templates: default template spec (see :func:`get_templates`), ``'vild'`` as in SAN.
        cache_dir: directory for on-disk embedding caches, or None.
        context_length: token positions (default: the tower's, 77).
        chunk_size: sentences encoded per tower call (bounds memory for large vocabularies).
    """

    def __init__(self,
                 clip_model: ClipModel,
                 pretrained: Optional[str] = None,
                 templates: Union[str, Sequence[str]] = 'vild',
                 cache_dir: Optional[str] = None,
                 context_length: Optional[int] = None,
                 chunk_size: int = 256,
                 init_cfg=None):
        super().__init__(clip_model, context_length=context_length, init_cfg=init_cfg)
        self.templates = get_templates(templates)
        self.cache_dir = cache_dir
        self.chunk_size = int(chunk_size)
        if self.chunk_size < 1:
            raise ValueError(f'OVCLIPTextEncoder: chunk_size must be >= 1, got {chunk_size}')
        self._cache = {}
        self._weights_digest = None
        self.register_load_state_dict_post_hook(self._on_weights_loaded)
        for p in self.parameters():
            p.requires_grad_(False)
        self.pretrained = pretrained
        self.train(False)

    @staticmethod
    def _on_weights_loaded(module, incompatible_keys):
        # Any load (torch, mmengine load_checkpoint, load_tower_weights) invalidates embeddings.
        module.clear_cache()

    def clear_cache(self) -> None:
        """Forget in-memory embeddings and the weight digest (disk files stay valid: they are
        keyed by the weights they were computed from)."""
        self._cache.clear()
        self._weights_digest = None

    def train(self, mode: bool = True):
        """Stay in eval mode: the tower is frozen, whatever the segmentor does."""
        return super().train(False)

    def weights_digest(self) -> str:
        """sha1 of the tower weights (names, dtypes, shapes, bytes) and the context length."""
        if self._weights_digest is None:
            h = hashlib.sha1(f'{self.context_length}|{self.text_pool_type}'.encode())
            for name, t in sorted(self.state_dict().items()):
                t = t.detach().cpu().contiguous()
                h.update(f'{name}|{t.dtype}|{tuple(t.shape)}'.encode())
                h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
            self._weights_digest = h.hexdigest()
        return self._weights_digest

    def _disk_path(self, vocabulary: List[str], templates: List[str]) -> str:
        key = json.dumps([self.weights_digest(), vocabulary, templates])
        name = hashlib.sha1(key.encode()).hexdigest()
        return osp.join(self.cache_dir, f'text_embeds_{name}.pt')

    def _load_disk(self, path: str, vocabulary, templates) -> Optional[torch.Tensor]:
        if not osp.isfile(path):
            return None
        try:
            data = torch.load(path, map_location='cpu', weights_only=True)
            embeds = data['embeds']
            ok = (data['vocabulary'] == vocabulary and data['templates'] == templates
                  and tuple(embeds.shape) == (len(vocabulary), self.embed_dims))
        except Exception as e:  # a corrupt or foreign file: recompute and overwrite
            MMLogger.get_current_instance().warning(
                f'OVCLIPTextEncoder: ignoring unreadable cache file {path}: {e}')
            return None
        return embeds if ok else None

    @staticmethod
    def _save_disk(path: str, embeds: torch.Tensor, vocabulary, templates) -> None:
        # Atomic: readers never see a half-written cache file.
        torch_save_atomic(dict(embeds=embeds.cpu(), vocabulary=vocabulary,
                               templates=templates), path)

    @torch.no_grad()
    def _compute(self, vocabulary: List[str], templates: List[str]) -> torch.Tensor:
        start = time.perf_counter()
        texts = [t.format(name) for t in templates for name in vocabulary]
        tokens = tokenize(texts, self.context_length)
        if self.attn_mask is not None and self.text_pool_type in ('argmax', 'eos'):
            # Causal attention: positions after the last EOT never reach the pooled feature,
            # so dropping the all-padding tail gives the same embeddings ~5-10x faster.
            tokens = tokens[:, :int((tokens != 0).sum(dim=1).max())]
        feats = [
            F.normalize(self.encode_text(chunk.to(self.device)), dim=-1)
            for chunk in tokens.split(self.chunk_size)
        ]
        feats = torch.cat(feats).view(len(templates), len(vocabulary), -1)
        embeds = F.normalize(feats.mean(dim=0), dim=-1)
        MMLogger.get_current_instance().info(
            f'OVCLIPTextEncoder: encoded {len(vocabulary)} classes x {len(templates)} '
            f'templates in {time.perf_counter() - start:.2f}s (cached for later calls)')
        return embeds

    def embed(self, vocabulary: List[str], templates: List[str]) -> torch.Tensor:
        """Class embeddings of resolved names and templates, without the in-memory cache.

        What :class:`~mmseg_ovseg.models.segmentors.TextEncoderDecoder` calls: the segmentor
        resolves the specs once and owns the in-memory cache. The disk cache (``cache_dir``)
        is read and written here.

        Args:
            vocabulary (list[str]): class names.
            templates (list[str]): prompt templates (``'{}'`` marks the name).

        Returns:
            (C, D) L2-normalised embeddings on the encoder's device and in its dtype,
            without grad.
        """
        vocabulary, templates = list(vocabulary), list(templates)
        path = self._disk_path(vocabulary, templates) if self.cache_dir else None
        embeds = self._load_disk(path, vocabulary, templates) if path else None
        if embeds is None:
            embeds = self._compute(vocabulary, templates)
            if path:
                self._save_disk(path, embeds, vocabulary, templates)
        return embeds.to(self.device, self.token_embedding.weight.dtype)

    def encode(self,
               vocabulary: Union[str, Sequence[str]],
               templates: Union[str, Sequence[str], None] = None) -> torch.Tensor:
        """Class embeddings of a vocabulary, cached in memory per (vocabulary, templates).

        For direct use of the encoder; a segmentor calls :meth:`embed` and keeps its own
        cache.

        Args:
            vocabulary: class names (or any spec accepted by :func:`get_vocabulary`).
            templates: template spec; None uses the encoder's default.

        Returns:
            (C, D) L2-normalised embeddings on the encoder's device, without grad. The tensor
            is shared with the cache: do not modify it in place.
        """
        vocabulary = get_vocabulary(vocabulary)
        templates = self.templates if templates is None else get_templates(templates)
        key = (tuple(vocabulary), tuple(templates))
        embeds = self._cache.get(key)
        if embeds is None:
            embeds = self.embed(vocabulary, templates)
        # (computed before a move or cast: moved, as the segmentor's weights are)
        embeds = embeds.to(self.device, self.token_embedding.weight.dtype)
        self._cache[key] = embeds
        return embeds

    def forward(self, vocabulary, templates=None) -> torch.Tensor:
        """Same as :meth:`encode`."""
        return self.encode(vocabulary, templates)


@MODELS.register_module()
class ContextCLIPTextEncoder(_CLIPTextTower):
    """CLIP text encoder with learnable context vectors instead of a hand-written template.

    Implements context optimisation (CoOp, Zhou et al. IJCV 2022, Sec. 3.2) as used by
    DenseCLIP's language-domain prompting (Rao et al. CVPR 2022, Sec. 3.3): each class is
    encoded from the token embeddings ``[SOT, ctx_1..ctx_N, name tokens, suffix, EOT]`` where
    the ``N`` context vectors (shared by all classes) are the only trainable parameters; the
    tower is frozen and in eval mode. DenseCLIP's own layout is ``num_contexts=8,
    context_length=13, name_suffix=''`` (class names limited to 3 BPE tokens, which raises here
    rather than truncating) and ``init_std=1.0``.

    Args:
        clip_model: open_clip model name or config dict.
        pretrained: local CLIP checkpoint path or None; loaded strictly (``contexts`` aside)
            by :meth:`init_weights`.
        num_contexts: number N of learnable context vectors.
        context_length: token positions (default: the tower's, 77).
        name_suffix: appended to every class name before tokenising (CoOp uses '.').
        init_std: std of the normal initialisation of the context vectors.
    """

    _not_in_clip = ('contexts', )

    def __init__(self,
                 clip_model: ClipModel,
                 pretrained: Optional[str] = None,
                 num_contexts: int = 8,
                 context_length: Optional[int] = None,
                 name_suffix: str = '.',
                 init_std: float = 0.02,
                 init_cfg=None):
        super().__init__(clip_model, context_length=context_length, init_cfg=init_cfg)
        if not 1 <= num_contexts <= self.context_length - 3:
            raise ValueError(f'ContextCLIPTextEncoder: num_contexts must be in [1, '
                             f'{self.context_length - 3}] (context_length '
                             f'{self.context_length} minus SOT, EOT and one name token), '
                             f'got {num_contexts}')
        self.num_contexts = num_contexts
        self.name_suffix = name_suffix
        for p in self.parameters():
            p.requires_grad_(False)
        width = self.token_embedding.weight.shape[1]
        self.contexts = nn.Parameter(torch.empty(num_contexts, width).normal_(std=init_std))
        self.pretrained = pretrained
        self._token_cache = {}
        self.train(True)

    def train(self, mode: bool = True):
        """The frozen tower stays in eval mode; only ``self.training`` follows ``mode``."""
        self.training = mode
        for module in self.children():
            module.train(False)
        return self

    def _tokens(self, vocabulary: List[str]) -> torch.Tensor:
        """(C, L) ids ``[SOT, 0 x N, name ids, EOT, 0...]``; the zeros mark context slots."""
        key = tuple(vocabulary)
        if key not in self._token_cache:
            budget = self.context_length - 2 - self.num_contexts
            rows = torch.zeros(len(vocabulary), self.context_length, dtype=torch.long)
            for i, name in enumerate(vocabulary):
                ids = bpe_encode(name + self.name_suffix)
                if len(ids) > budget:
                    raise ValueError(
                        f'ContextCLIPTextEncoder: class {name!r} is {len(ids)} BPE tokens '
                        f'(with suffix {self.name_suffix!r}); at most {budget} fit in '
                        f'context_length {self.context_length} with {self.num_contexts} '
                        'context vectors')
                seq = [sot_token_id()] + [0] * self.num_contexts + ids + [eot_token_id()]
                rows[i, :len(seq)] = torch.tensor(seq)
            self._token_cache[key] = rows
        return self._token_cache[key]

    def forward(self, vocabulary: Union[str, Sequence[str]],
                normalize: bool = True,
                contexts: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Class embeddings with the current context vectors.

        Args:
            vocabulary: class names (or any spec accepted by :func:`get_vocabulary`).
            normalize: L2-normalise the embeddings. DenseCLIP's context decoder takes the
                raw projected text features (``normalize=False``).
            contexts: context vectors to use instead of ``self.contexts``: ``(B, N, W)``, one
                set per image (DenseCLIP's pre-model prompting), every class encoded with
                each set. Default: None (the learnable ``self.contexts``).

        Returns:
            (C, D) embeddings (L2-normalised by default), differentiable w.r.t. ``contexts``;
            ``(B, C, D)`` when ``contexts`` is given.
        """
        tokens = self._tokens(get_vocabulary(vocabulary)).to(self.device)
        embeds = self.token_embedding(tokens)
        n = self.num_contexts
        if contexts is None:
            ctx = self.contexts.to(embeds.dtype).unsqueeze(0).expand(len(tokens), -1, -1)
            embeds = torch.cat([embeds[:, :1], ctx, embeds[:, 1 + n:]], dim=1)
            feats = self.encode_embeddings(embeds, tokens)
            return F.normalize(feats, dim=-1) if normalize else feats
        if contexts.dim() != 3 or contexts.shape[1:] != self.contexts.shape:
            raise ValueError(f'ContextCLIPTextEncoder: contexts must be (B, {n}, '
                             f'{self.contexts.shape[1]}), got {tuple(contexts.shape)}')
        b, k = contexts.shape[0], len(tokens)
        # (B, K, L, W): [SOT, the image's N contexts, name, EOT, ...] for every class
        ctx = contexts.to(embeds.dtype).unsqueeze(1).expand(-1, k, -1, -1)
        embeds = embeds.unsqueeze(0).expand(b, -1, -1, -1)
        embeds = torch.cat([embeds[:, :, :1], ctx, embeds[:, :, 1 + n:]], dim=2)
        feats = self.encode_embeddings(embeds.flatten(0, 1), tokens.repeat(b, 1))
        feats = feats.view(b, k, -1)
        return F.normalize(feats, dim=-1) if normalize else feats
