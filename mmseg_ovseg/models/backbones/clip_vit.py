"""CLIP ViT image tower (open_clip) driven by a forward that hosts what the papers add.

One backbone serves every ViT-based method of the package:

- dense outputs: per-layer patch-token maps and CLIP's dense patch embeddings
  (``ln_post`` + ``proj`` applied to every patch token, as MaskCLIP/ZegCLIP use them);
- position-embedding resizing (bicubic) for any input size;
- deep visual prompt tuning (ZegCLIP, Sec. 3.3; VPT-deep): ``num_prompt_tokens`` learnable
  tokens inserted after CLS at the first layer and replaced by each later layer's own prompts;
- SLS tokens with attention bias (SAN, Sec. 3.3): ``forward_sls`` of ``clip_sls.py``.

The CLIP blocks run their math on plain operations (``_linear``, ``sdpa``) whose CPU inference
fast paths (prepacked float32 linears, cached autocast weights, blocked bfloat16 attention)
live behind one switch in ``mmseg_ovseg.models.layers.fast_path``.

The open_clip tower is held as ``self.visual``, so state-dict keys are exactly the
``visual.*`` keys of a CLIP checkpoint and OpenAI/open_clip weights load unconverted.
"""
import math
from typing import Dict, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import BaseModule
from mmseg.registry import MODELS
from torch import Tensor

from mmseg_ovseg.clip.builder import build_visual_tower, load_tower_weights
from mmseg_ovseg.models.layers import resize_pos_embed
from mmseg_ovseg.models.layers.fast_path import ONEDNN_LINEAR, WeightCache, sdpa

from .clip_sls import SLS_MASK_VALUE, SLSBlocksMixin, build_sls_attn_mask

__all__ = [
    'CLIPVisionTransformer', 'SLS_MASK_VALUE', 'build_sls_attn_mask', 'resize_clip_pos_embed'
]


def resize_clip_pos_embed(pos_embed: Tensor, src_hw: Tuple[int, int], dst_hw: Tuple[int, int],
                          num_prefix: int = 1, mode: str = 'bicubic') -> Tensor:
    """CLIP's ``(num_prefix + h*w, D)`` position embedding on another patch grid: the prefix
    (CLS) rows kept, the grid interpolated (``align_corners=False``, no antialiasing, as
    mmseg's ViT). Identity when the grids are equal. See :func:`resize_pos_embed`."""
    return resize_pos_embed(pos_embed, src_hw, dst_hw, num_prefix, mode)


def _drop_path(x: Tensor, p: float, training: bool) -> Tensor:
    if p == 0.0 or not training:
        return x
    keep = x.new_empty((x.shape[0], ) + (1, ) * (x.ndim - 1)).bernoulli_(1 - p)
    return x * keep / (1 - p)


def _check_vit_tower(visual: nn.Module, clip_model: Union[str, dict]) -> None:
    if not hasattr(visual, 'transformer') or not hasattr(visual, 'conv1'):
        raise TypeError(f'{clip_model!r} is not a ViT CLIP model; use '
                        'CLIPResNetWithAttention for ResNet towers')
    for i, blk in enumerate(visual.transformer.resblocks):
        if not isinstance(getattr(blk, 'attn', None), nn.MultiheadAttention):
            raise TypeError(f'block {i} of {clip_model!r} is a {type(blk).__name__} '
                            'without a standard attention; not supported')


@MODELS.register_module()
class CLIPVisionTransformer(SLSBlocksMixin, BaseModule):
    """CLIP ViT backbone built by open_clip.

    Args:
        clip_model (str | dict): open_clip model name (``'ViT-B-16'``; use ``-quickgelu``
            names with OpenAI weights) or a config dict (see ``mmseg_ovseg.clip.builder``).
        pretrained (str, optional): local CLIP checkpoint (full CLIP or visual-only keys with
            the ``visual.`` prefix), loaded strictly by :meth:`init_weights` (mmengine's
            convention: the Runner calls it before training; a model that then loads a full
            checkpoint, e.g. ``mmseg.apis.init_model`` or ``tools/test.py``, never reads it).
        out_indices (Sequence[int]): blocks whose outputs ``forward`` returns as
            ``(B, D, h, w)`` maps. Negative indices count from the end.
        out_origin (bool): also return the post-``ln_pre`` embedding map first.
        output_dense (bool): append CLIP's dense patch embedding ``(B, C, h, w)`` and global
            (CLS) embedding ``(B, C)`` after ``ln_post`` + ``proj`` to the outputs.
        normalize_dense (bool): L2-normalise the dense and global embeddings.
        frozen (bool): freeze the CLIP tower (prompt parameters always train).
        frozen_exclude (Sequence[str]): substrings of ``visual`` parameter names that stay
            trainable when frozen (SAN trains ``positional_embedding``).
        num_prompt_tokens (int): deep visual prompt tokens per layer (0: none).
        prompt_depth (int): number of layers that receive their own prompts (1 = shallow VPT;
            the number of layers = VPT-deep); ignored without prompt tokens.
        prompt_dropout (float): dropout on projected prompts.
        prompt_proj (bool): a shared ``Linear(D, D)`` applied to every layer's prompts.
        drop_path_rate (float): stochastic depth, linearly increasing over the blocks.
        pad_to_patch (bool): zero-pad inputs at the bottom/right to a multiple of the patch
            size (so odd sizes and images smaller than one patch work).
        interpolate_mode (str): position-embedding resize mode.
        pos_grid (tuple[int, int], optional): patch grid the position embedding is kept at
            (its parameter has this grid from construction on). CLIP's embedding (when
            ``pretrained`` is loaded, after the class-embedding fold) is resized to it once, with
            ``interpolate_mode``, and trains at that size, as the official DenseCLIP and
            ZegCLIP backbones do (40x40 for a 640 crop); other input sizes are still resized
            from it in ``forward``. None keeps CLIP's grid (14x14 for ViT-B/16 at 224).
        fold_class_embedding (bool): when ``pretrained`` is loaded (before the ``pos_grid``
            resize), add
            ``class_embedding`` to row 0 of the position embedding once, so the CLS token
            becomes ``2 * class_embedding + positional_embedding[0]``: the official ZegCLIP
            backbone adds ``class_embedding`` twice (as the token and to its position row).
            Exact while both stay frozen (as in ZegCLIP). No effect without ``pretrained``:
            checkpoints converted from official ZegCLIP/DenseCLIP are folded by their
            converters, and trained checkpoints already hold the folded row.
        onednn_linear (bool): in float32 CPU inference with the fast path on, run the block
            linears as oneDNN inner products on weights reordered once
            (:class:`~mmseg_ovseg.models.layers.fast_path.WeightCache`). Faster (1.2x for a
            ViT-B/16 SAN) but keeps one float32 copy of every block weight (+4 bytes per
            parameter: ~340 MB for ViT-B, ~1.2 GB for ViT-L); False keeps ``F.linear``.
    """

    def __init__(self,
                 clip_model: Union[str, dict] = 'ViT-B-16',
                 pretrained: Optional[str] = None,
                 out_indices: Sequence[int] = (-1, ),
                 out_origin: bool = False,
                 output_dense: bool = False,
                 normalize_dense: bool = False,
                 frozen: bool = True,
                 frozen_exclude: Sequence[str] = (),
                 num_prompt_tokens: int = 0,
                 prompt_depth: int = 0,
                 prompt_dropout: float = 0.0,
                 prompt_proj: bool = True,
                 drop_path_rate: float = 0.0,
                 pad_to_patch: bool = True,
                 interpolate_mode: str = 'bicubic',
                 pos_grid: Optional[Sequence[int]] = None,
                 fold_class_embedding: bool = False,
                 onednn_linear: bool = True,
                 init_cfg: Optional[dict] = None):
        super().__init__(init_cfg=init_cfg)
        self.visual = build_visual_tower(clip_model)
        _check_vit_tower(self.visual, clip_model)
        self.pretrained = pretrained
        self.fold_class_embedding = fold_class_embedding
        # CLIP's own position grid: a checkpoint's embedding has this shape.
        self.clip_pos_shape = tuple(self.visual.positional_embedding.shape)
        self.clip_grid = tuple(self.visual.grid_size)
        self.num_layers = len(self.visual.transformer.resblocks)
        self.width = self.visual.conv1.out_channels
        self.num_heads = self.visual.transformer.resblocks[0].attn.num_heads
        self.patch_size = tuple(self.visual.conv1.kernel_size)
        self.interpolate_mode = interpolate_mode
        self._init_pos_grid(pos_grid)
        self.out_indices = [i % self.num_layers for i in out_indices]
        self.out_origin = out_origin
        self.output_dense = output_dense
        self.normalize_dense = normalize_dense
        self.pad_to_patch = pad_to_patch
        self.drop_path_rates = [
            drop_path_rate * i / max(self.num_layers - 1, 1) for i in range(self.num_layers)
        ]
        self.num_prompt_tokens = num_prompt_tokens
        self.prompt_depth = min(prompt_depth, self.num_layers) if num_prompt_tokens else 0
        if self.prompt_depth:
            self._init_prompts(prompt_dropout, prompt_proj)
        # Inference copies of the weights: autocast casts, oneDNN-reordered linears.
        self._cast_cache = WeightCache(prepack=onednn_linear)
        self.frozen = frozen
        if frozen:
            for name, param in self.visual.named_parameters():
                param.requires_grad = any(key in name for key in frozen_exclude)

    def _init_pos_grid(self, pos_grid: Optional[Sequence[int]]) -> None:
        """Keep the position embedding parameter at ``pos_grid`` (see the class docstring)."""
        self.pos_grid = self.clip_grid
        if pos_grid is None or tuple(pos_grid) == self.pos_grid:
            return
        if len(pos_grid) != 2 or min(pos_grid) < 1:
            raise ValueError(f'pos_grid must be (h, w) patches, got {pos_grid}')
        with torch.no_grad():
            pos = resize_clip_pos_embed(self.visual.positional_embedding, self.pos_grid,
                                        tuple(pos_grid), 1, self.interpolate_mode)
        self.visual.positional_embedding = nn.Parameter(pos.contiguous())
        self.pos_grid = tuple(pos_grid)
        self.visual.grid_size = self.pos_grid

    def _init_prompts(self, prompt_dropout: float, prompt_proj: bool) -> None:
        """Deep visual prompts (ZegCLIP / VPT-deep), one set per prompted layer."""
        # VPT's uniform init: +-sqrt(6 / (3 * patch_area + D)).
        val = math.sqrt(6.0 / float(3 * self.patch_size[0] * self.patch_size[1] + self.width))
        self.prompt_embeddings = nn.Parameter(
            torch.empty(self.prompt_depth, self.num_prompt_tokens,
                        self.width).uniform_(-val, val))
        self.prompt_proj = nn.Linear(self.width, self.width) if prompt_proj else nn.Identity()
        if prompt_proj:
            nn.init.kaiming_normal_(self.prompt_proj.weight, a=0, mode='fan_out')
            nn.init.zeros_(self.prompt_proj.bias)
        self.prompt_dropout = nn.Dropout(prompt_dropout)
        self.prompt_norm = nn.LayerNorm(self.width, eps=1e-6)

    @property
    def onednn_linear(self) -> bool:
        """Whether float32 inference may use oneDNN-reordered linears (and they exist)."""
        return self._cast_cache.prepack and ONEDNN_LINEAR

    @onednn_linear.setter
    def onednn_linear(self, enabled: bool) -> None:
        self._cast_cache.prepack = bool(enabled)

    def init_weights(self) -> None:
        """mmengine's weight initialisation, then the CLIP weights of ``pretrained``.

        The checkpoint is checked and loaded strictly at CLIP's own position grid, then
        ``fold_class_embedding`` and the ``pos_grid`` resize are applied to it, in that order
        and once per load (every call starts from the file's values), and the result is copied
        into the existing parameters (an optimizer built before, as mmengine's Runner does,
        keeps them).
        """
        first = not self.is_init
        super().init_weights()
        if first and self.pretrained is not None:
            self.load_clip_weights(self.pretrained)

    def load_clip_weights(self, pretrained: str) -> None:
        """Load the ``visual.*`` weights of a CLIP checkpoint (see :meth:`init_weights`)."""
        visual = self.visual
        pos = visual.positional_embedding
        # Check and load at CLIP's grid into a stand-in position parameter.
        visual.positional_embedding = nn.Parameter(pos.new_empty(self.clip_pos_shape),
                                                   requires_grad=pos.requires_grad)
        try:
            load_tower_weights(visual, pretrained, 'visual')
            with torch.no_grad():
                clip_pos = visual.positional_embedding.detach().clone()
                if self.fold_class_embedding:
                    clip_pos[0] += visual.class_embedding
                clip_pos = resize_clip_pos_embed(clip_pos, self.clip_grid, self.pos_grid, 1,
                                                 self.interpolate_mode)
                pos.copy_(clip_pos)
        finally:
            visual.positional_embedding = pos
        self.clear_cast_cache()

    # ------------------------------------------------------------------ building blocks
    def _layer_prompts(self, layer: int, batch: int) -> Tensor:
        prompts = self.prompt_dropout(self.prompt_proj(self.prompt_embeddings[layer]))
        return prompts.unsqueeze(0).expand(batch, -1, -1)

    def embed(self, x: Tensor) -> Tuple[Tensor, Tuple[int, int]]:
        """Patch embedding, CLS, resized position embedding, ``ln_pre`` and shallow prompts.

        Args:
            x: ``(B, 3, H, W)`` normalised image.

        Returns:
            tokens ``(B, 1 [+ prompts] + h*w, D)`` and the patch grid ``(h, w)``.
        """
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f'expected images of shape (B, 3, H, W), got {tuple(x.shape)}')
        ph, pw = self.patch_size
        if self.pad_to_patch:
            pad_h, pad_w = (-x.shape[2]) % ph, (-x.shape[3]) % pw
            if pad_h or pad_w:
                x = F.pad(x, (0, pad_w, 0, pad_h))
        elif x.shape[2] < ph or x.shape[3] < pw:
            raise ValueError(f'image {tuple(x.shape[2:])} is smaller than one patch {ph}x{pw}')
        visual = self.visual
        conv = visual.conv1
        x = F.conv2d(x, self._w(conv.weight), None if conv.bias is None else self._w(conv.bias),
                     stride=conv.stride)
        hw = (x.shape[2], x.shape[3])
        x = x.flatten(2).transpose(1, 2)
        cls = visual.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1)
        pos = resize_clip_pos_embed(visual.positional_embedding, self.pos_grid, hw, 1,
                                    self.interpolate_mode)
        x = visual.ln_pre(x + pos.to(x.dtype))
        if self.prompt_depth:
            x = torch.cat([x[:, :1], self._layer_prompts(0, x.shape[0]).to(x.dtype), x[:, 1:]],
                          dim=1)
        return x, hw

    def _w(self, param: Tensor) -> Tensor:
        """``param`` as a GEMM should see it (a cached copy under autocast; fast path)."""
        return self._cast_cache.weight(param)

    def _linear(self, x: Tensor, weight: Tensor, bias: Optional[Tensor],
                rows: Optional[slice] = None) -> Tensor:
        """``F.linear(x, weight[rows], bias[rows])`` (prepacked / cached copies; fast path)."""
        return self._cast_cache.linear(x, weight, bias, rows=rows)

    def clear_cast_cache(self) -> None:
        """Drop the weight copies kept for inference (see ``WeightCache``)."""
        self._cast_cache.clear()

    def _split_heads(self, t: Tensor) -> Tensor:
        """``(B, N, D)`` -> ``(B, heads, N, D/heads)``."""
        return t.unflatten(-1, (self.num_heads, -1)).transpose(1, 2)

    def _qkv(self, blk: nn.Module, x: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """``(B, N, D)`` normalised tokens -> q, k, v as ``(B, heads, N, D/heads)``."""
        attn = blk.attn
        q, k, v = self._linear(x, attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
        return self._split_heads(q), self._split_heads(k), self._split_heads(v)

    def _attn_residual(self, index: int, x: Tensor, attn: Tensor) -> Tensor:
        """``x`` plus block ``index``'s output projection of the heads ``attn``."""
        blk = self.visual.transformer.resblocks[index]
        proj = blk.attn.out_proj
        out = self._linear(attn.transpose(1, 2).flatten(2), proj.weight, proj.bias)
        return x + _drop_path(blk.ls_1(out), self.drop_path_rates[index], self.training)

    def _mlp_residual(self, index: int, x: Tensor) -> Tensor:
        """``x`` plus block ``index``'s MLP (open_clip's ``c_fc -> act -> c_proj``)."""
        blk = self.visual.transformer.resblocks[index]
        mlp = blk.mlp
        out = self._cast_cache.mlp(blk.ln_2(x), mlp.c_fc, mlp.gelu, mlp.c_proj)
        return x + _drop_path(blk.ls_2(out), self.drop_path_rates[index], self.training)

    def block_forward(self, index: int, x: Tensor) -> Tensor:
        """One CLIP residual block on ``(B, N, D)`` tokens."""
        blk = self.visual.transformer.resblocks[index]
        q, k, v = self._qkv(blk, blk.ln_1(x))
        return self._mlp_residual(index, self._attn_residual(index, x, sdpa(q, k, v)))

    def forward_blocks(self,
                       tokens: Tensor,
                       start: int = 0,
                       end: Optional[int] = None,
                       out_indices: Sequence[int] = ()) -> Tuple[Tensor, Dict[int, Tensor]]:
        """Run blocks ``start..end-1``; replace deep prompts before each prompted layer.

        Returns:
            the tokens after block ``end - 1`` and ``{i: tokens after block i}`` for
            ``i`` in ``out_indices``.
        """
        end = self.num_layers if end is None else end
        outs = {}
        n = self.num_prompt_tokens
        for i in range(start, end):
            if 0 < i < self.prompt_depth:
                # VPT-deep: the previous layer's prompt outputs are discarded, not passed on.
                prompts = self._layer_prompts(i, tokens.shape[0]).to(tokens.dtype)
                tokens = torch.cat([tokens[:, :1], prompts, tokens[:, 1 + n:]], dim=1)
            elif i == self.prompt_depth > 0:
                # Past the prompted layers the prompt tokens leave (as ZegCLIP's VPT does).
                tokens = torch.cat([tokens[:, :1], tokens[:, 1 + n:]], dim=1)
            tokens = self.block_forward(i, tokens)
            if i in out_indices:
                outs[i] = tokens
        return tokens, outs

    def tokens_to_map(self, tokens: Tensor, hw: Tuple[int, int]) -> Tensor:
        """``(B, prefix + h*w, D)`` -> patch map ``(B, D, h, w)``."""
        patches = tokens[:, tokens.shape[1] - hw[0] * hw[1]:]
        return patches.transpose(1, 2).reshape(tokens.shape[0], -1, hw[0], hw[1])

    def project(self, tokens: Tensor) -> Tensor:
        """CLIP's output head on any tokens: (``prompt_norm``,) ``ln_post``, ``proj``."""
        if self.prompt_depth:
            tokens = self.prompt_norm(tokens)
        tokens = self.visual.ln_post(tokens)
        if self.visual.proj is not None:
            tokens = tokens @ self._w(self.visual.proj)
        return tokens

    def dense_embed(self, tokens: Tensor, hw: Tuple[int, int]) -> Tuple[Tensor, Tensor]:
        """Dense patch embeddings ``(B, C, h, w)`` and the global embedding ``(B, C)``."""
        cls = self.project(tokens[:, 0])
        dense = self.project(tokens[:, tokens.shape[1] - hw[0] * hw[1]:])
        if self.normalize_dense:
            cls = F.normalize(cls, dim=-1)
            dense = F.normalize(dense, dim=-1)
        dense = dense.transpose(1, 2).reshape(tokens.shape[0], -1, hw[0], hw[1])
        return dense, cls

    # ------------------------------------------------------------------ mmseg interface
    def forward(self, x: Tensor) -> Tuple[Tensor, ...]:
        """Return ``(origin?, *maps at out_indices, dense?, global?)``.

        Maps are ``(B, D, h, w)``; with ``output_dense`` the last two entries are the dense
        embedding ``(B, C, h, w)`` and the global embedding ``(B, C)``.
        """
        tokens, hw = self.embed(x)
        outs = [self.tokens_to_map(tokens, hw)] if self.out_origin else []
        end = max(self.out_indices) + 1 if not self.output_dense else self.num_layers
        tokens, layer_outs = self.forward_blocks(tokens, 0, end, self.out_indices)
        outs += [self.tokens_to_map(layer_outs[i], hw) for i in self.out_indices]
        if self.output_dense:
            outs += list(self.dense_embed(tokens, hw))
        return tuple(outs)
