"""SAN's SLS tokens on the CLIP ViT blocks (Sec. 3.3 "Mask recognition with attention bias").

From a split layer on, ``Q`` SLS tokens (copies of CLS) attend to ``[CLS; patches; SLS]``
with a predicted per-head bias, while CLS and patch tokens never see them. The SLS rows are
computed as a cross-attention (the paper's complexity argument): ``O((T+1)^2 + Q (T+1+Q))``
instead of the ``(Q+1+T)^2`` masked self-attention of the reference code.
"""
from typing import List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from mmseg_ovseg.models.layers.fast_path import sdpa

# Additive mask value the reference SAN implementation uses for blocked positions.
SLS_MASK_VALUE = -100.0


def build_sls_attn_mask(attn_bias: Tensor, num_prefix: int = 1) -> Tensor:
    """Additive mask for SLS queries over keys ``[prefix (CLS); patches; SLS]``.

    Args:
        attn_bias: ``(B, heads, Q, L)`` bias of each SLS token on each patch (CLIP grid).
        num_prefix: tokens before the patches (CLS).

    Returns:
        ``(B, heads, Q, num_prefix + L + Q)``: -100 on the prefix and on other SLS tokens, the
        bias on patches, 0 on each SLS token's own column.
    """
    b, h, q, _ = attn_bias.shape
    prefix = attn_bias.new_full((b, h, q, num_prefix), SLS_MASK_VALUE)
    eye = torch.eye(q, dtype=torch.bool, device=attn_bias.device)
    sls = attn_bias.new_full((q, q), SLS_MASK_VALUE).masked_fill(eye, 0.0)
    return torch.cat([prefix, attn_bias, sls.expand(b, h, q, q)], dim=-1)


def sls_masks(attn_bias: Union[Tensor, Sequence[Tensor]], num_blocks: int, num_heads: int,
              num_patches: int, dtype: torch.dtype) -> List[Tensor]:
    """One :func:`build_sls_attn_mask` per recognition block, checked against the tokens.

    A bias shared by all blocks gives one mask, built once per image (repeated in the list).
    """
    biases = list(attn_bias) if isinstance(attn_bias, (list, tuple)) else None
    if biases is not None and len(biases) != num_blocks:
        raise ValueError(f'got {len(biases)} attention biases for {num_blocks} recognition '
                         'blocks')
    first = biases[0] if biases is not None else attn_bias
    if first.shape[1] != num_heads or first.shape[-1] != num_patches:
        raise ValueError(f'attention bias {tuple(first.shape)} does not match '
                         f'{num_heads} heads x {num_patches} patches')
    if biases is None:
        return [build_sls_attn_mask(attn_bias).to(dtype)] * num_blocks
    return [build_sls_attn_mask(bias).to(dtype) for bias in biases]


class SLSBlocksMixin:
    """``forward_sls`` of :class:`CLIPVisionTransformer`, on its block operations
    (``_qkv``, ``_split_heads``, ``_attn_residual``, ``_mlp_residual``, ``_linear``)."""

    def forward_sls(self,
                    tokens: Tensor,
                    attn_bias: Union[Tensor, List[Tensor]],
                    start: int,
                    sls: Optional[Tensor] = None,
                    num_sls: Optional[int] = None,
                    return_visual: bool = True) -> Tuple[Tensor, Optional[Tensor]]:
        """Run blocks ``start..`` with SLS tokens (SAN's mask recognition).

        CLS and patch tokens run CLIP's ordinary attention (they never see SLS tokens). SLS
        tokens attend to keys ``[CLS; patches; SLS]`` with the mask of
        :func:`build_sls_attn_mask`, one attention call per block.

        Args:
            tokens: ``(B, 1 + L, D)`` tokens entering block ``start``.
            attn_bias: ``(B, heads, Q, L)`` bias shared by all blocks, or a list with one
                bias per block ``start..num_layers-1``.
            start: the split layer.
            sls: ``(B, Q, D)`` initial SLS tokens; default ``num_sls`` copies of CLS.
            num_sls: the number of SLS tokens when ``sls`` is None (default: from the bias).
            return_visual: also return the visual tokens after the last block; when False,
                the last block computes only the visual keys/values the SLS tokens need.

        Returns:
            SLS tokens ``(B, Q, D)`` and the visual tokens after the last block (None when
            ``return_visual`` is False).
        """
        if self.prompt_depth:
            raise NotImplementedError('SLS tokens together with deep prompts are not supported')
        masks = sls_masks(attn_bias, self.num_layers - start, self.num_heads,
                          tokens.shape[1] - 1, tokens.dtype)
        if sls is None:
            num_sls = masks[0].shape[2] if num_sls is None else num_sls
            sls = tokens[:, :1].expand(-1, num_sls, -1)
        x = tokens
        for i, mask in zip(range(start, self.num_layers), masks):
            if i == self.num_layers - 1 and not return_visual:
                return self._sls_last_block(i, x, sls, mask), None
            x, sls = self._sls_block(i, x, sls, mask)
        return sls, x

    def _sls_block(self, index: int, x: Tensor, sls: Tensor,
                   mask: Tensor) -> Tuple[Tensor, Tensor]:
        """Block ``index`` on visual tokens ``x`` (plain attention) and SLS tokens (masked)."""
        blk = self.visual.transformer.resblocks[index]
        n_vis = x.shape[1]
        # Visual and SLS tokens share every projection: one GEMM each for both.
        y = torch.cat([x, sls], dim=1)
        q, k, v = self._qkv(blk, blk.ln_1(y))
        x_attn = sdpa(q[:, :, :n_vis], k[:, :, :n_vis], v[:, :, :n_vis])
        s_attn = sdpa(q[:, :, n_vis:], k, v, attn_mask=mask)
        y = self._attn_residual(index, y, torch.cat([x_attn, s_attn], dim=2))
        y = self._mlp_residual(index, y)
        return y[:, :n_vis], y[:, n_vis:]

    def _sls_last_block(self, index: int, x: Tensor, sls: Tensor, mask: Tensor) -> Tensor:
        """The last block when its visual output is unused: only the visual keys/values."""
        attn = self.visual.transformer.resblocks[index].attn
        ln_1 = self.visual.transformer.resblocks[index].ln_1
        kx, vx = self._linear(ln_1(x), attn.in_proj_weight, attn.in_proj_bias,
                              rows=slice(self.width, None)).chunk(2, dim=-1)
        kx, vx = self._split_heads(kx), self._split_heads(vx)
        qs, ks, vs = self._qkv(self.visual.transformer.resblocks[index], ln_1(sls))
        s_attn = sdpa(qs, torch.cat([kx, ks], dim=2), torch.cat([vx, vs], dim=2), attn_mask=mask)
        return self._mlp_residual(index, self._attn_residual(index, sls, s_attn))
