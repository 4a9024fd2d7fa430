"""Query-based down-sampling (QD) inside a plain ViT: the encoder of SegViT-Shrunk.

`SegViT <https://arxiv.org/abs/2210.05844>`_, method, "Shrunk structure" (QD):
the output size of an attention layer is set by its queries, so layer ``shrink_idx`` of the
ViT is run with a *nearest-neighbour down-sampled* copy of the token grid as queries (every
second row and column, ``[::2, ::2]``) and the full-resolution tokens as keys and values; its
residual identity is the down-sampled queries. All later layers then run on 1/4 of the tokens
(stride 16 -> 32), which is where the ~40% FLOP saving of SegViT-Shrunk comes from (ViT-L,
``shrink_idx=8``: 637.9 -> 373.5 GFLOPs with the QU decoder). The QD layer keeps its ordinary
pretrained weights; only its inputs change.

This is mmseg's own :class:`~mmseg.models.backbones.VisionTransformer` (same modules and
checkpoint keys, through :class:`StrictVisionTransformer`, whose ``init_cfg`` pretrained load
reports keys that do not fit) with a forward that applies QD; it does not redefine the ViT.
"""
import torch
from mmseg.registry import MODELS
from torch import Tensor

from .strict_vit import StrictVisionTransformer


@MODELS.register_module()
class ShrunkVisionTransformer(StrictVisionTransformer):
    """mmseg ``VisionTransformer`` with query-based down-sampling at layer ``shrink_idx``.

    Args:
        shrink_idx (int): 0-based index of the layer that down-samples (official: 8 for ViT-L,
            i.e. the 9th layer). Must be in ``[0, num_layers)``.
        **kwargs: :class:`StrictVisionTransformer` (mmseg ``VisionTransformer``) arguments,
            e.g. ``patch_bias=True`` for official SegViT / mmseg 0.x checkpoints. As in the
            official code the class token (if ``with_cls_token``) is dropped at the QD layer;
            ``output_cls_token`` is not supported.

    Forward: ``(B, 3, H, W)`` -> tuple of ``(B, C, h_i, w_i)`` maps at ``out_indices``; maps of
    layers before ``shrink_idx`` have the patch grid ``(h, w)``, later ones
    ``(ceil(h / 2), ceil(w / 2))``.
    """

    def __init__(self, shrink_idx: int = 8, **kwargs):
        super().__init__(**kwargs)
        if not 0 <= shrink_idx < len(self.layers):
            raise ValueError(f'shrink_idx {shrink_idx} is outside [0, {len(self.layers)})')
        if self.output_cls_token:
            raise ValueError('ShrunkVisionTransformer drops the class token at the QD layer; '
                             'output_cls_token is not supported')
        self.shrink_idx = shrink_idx

    @staticmethod
    def query_downsample(tokens: Tensor, hw_shape) -> Tensor:
        """Nearest down-sampling of ``(B, h*w, C)`` grid tokens -> ``(B, h'*w', C)``,
        ``h' = ceil(h / 2)``, ``w' = ceil(w / 2)`` (rows/columns 0, 2, 4, ...)."""
        b, _, c = tokens.shape
        grid = tokens.view(b, hw_shape[0], hw_shape[1], c)
        return grid[:, ::2, ::2].reshape(b, -1, c)

    def query_downsample_layer(self, layer, x: Tensor, hw_shape) -> Tensor:
        """One encoder layer with down-sampled queries (QD): ``(B, h*w, C)`` -> ``(B, h'*w',
        C)``. Pre-norm as every mmseg ViT layer: ``q + Attn(LN(q), LN(x), LN(x))``, then FFN."""
        query = self.query_downsample(x, hw_shape)
        kv = layer.norm1(x)
        x = layer.attn(query=layer.norm1(query), key=kv, value=kv, identity=query)
        return layer.ffn(layer.norm2(x), identity=x)

    def _to_map(self, x: Tensor, hw_shape, has_cls: bool) -> Tensor:
        out = x[:, 1:] if has_cls else x
        b, _, c = out.shape
        return out.reshape(b, hw_shape[0], hw_shape[1], c).permute(0, 3, 1, 2).contiguous()

    def forward(self, inputs: Tensor):
        b = inputs.shape[0]
        x, hw_shape = self.patch_embed(inputs)
        x = torch.cat((self.cls_token.expand(b, -1, -1), x), dim=1)
        x = self._pos_embeding(x, hw_shape, self.pos_embed)
        has_cls = self.with_cls_token
        if not has_cls:
            x = x[:, 1:]
        if self.pre_norm:
            x = self.pre_ln(x)
        outs = []
        if self.out_origin:
            outs.append(self._to_map(x, hw_shape, has_cls))
        for i, layer in enumerate(self.layers):
            if i == self.shrink_idx:
                if has_cls:  # official: the class token does not survive QD
                    x, has_cls = x[:, 1:], False
                x = self.query_downsample_layer(layer, x, hw_shape)
                hw_shape = ((hw_shape[0] + 1) // 2, (hw_shape[1] + 1) // 2)
            else:
                x = layer(x)
            if i == len(self.layers) - 1 and self.final_norm:
                x = self.norm1(x)
            if i in self.out_indices:
                outs.append(self._to_map(x, hw_shape, has_cls))
        return tuple(outs)
