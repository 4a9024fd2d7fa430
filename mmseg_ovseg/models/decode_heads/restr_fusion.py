"""ReSTR's multimodal fusion encoder (Kim et al., CVPR 2022, Sec. 3.2, Fig. 2b): a
visual-linguistic encoder over ``[patches; words]`` and a linguistic-seed encoder over
``[words; seed]`` whose seed output is turned into an *adaptive classifier* of the patches.
"""
from typing import Dict

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import BaseModule
from mmseg.registry import MODELS
from torch import Tensor

from ..layers import MaskedTransformerBlock, padding_bias, trunc_normal_init_weights


@MODELS.register_module()
class ReSTRFusionEncoder(BaseModule):
    """Fusion of patch features and word features into patch logits.

    1. L2-normalise both modalities along channels, project to ``d`` (``proj_v``,
       ``proj_l``); padded words are zeroed.
    2. Visual-linguistic encoder (``vl_blocks``, pre-norm): self-attention over
       ``[x_v; x_l]`` (``N + T`` tokens), padded words masked out as keys.
    3. Linguistic-seed encoder (``seed_blocks``, pre-norm): over ``[x_l'; seed]`` (``T + 1``
       tokens, padded words masked), then LayerNorm; the seed output ``s`` gives the adaptive
       classifier ``c = s @ proj_cls``.
    4. Patch logits ``y_p = (p @ proj_patch) . c`` for the fused patches ``p``.

    The official module passes no mask to its attention, so padded word tokens are attended
    to (as zero vectors in the first block, as whatever the block made of them later); here
    they never are, and outputs do not depend on the padding (``docs/restr.md``).

    Args:
        visual_dims (int): channels of the visual features (ViT width).
        language_dims (int): channels of the word features.
        embed_dims (int): ``d`` (official: 768, the ViT width).
        num_layers (int): blocks in each of the two encoders (official: 2).
        num_heads (int): attention heads (official: 12).
        ffn_ratio (int): FFN width ``ffn_ratio * d`` (official: 4).
        drop_path_rate (float): stochastic depth, linear over the blocks of each encoder
            (official: 0.1).
        mask_padding (bool): mask padded words out of attention. False reproduces the
            official behaviour (for comparisons only). Default True.
    """

    def __init__(self,
                 visual_dims: int = 768,
                 language_dims: int = 768,
                 embed_dims: int = 768,
                 num_layers: int = 2,
                 num_heads: int = 12,
                 ffn_ratio: int = 4,
                 drop_path_rate: float = 0.1,
                 mask_padding: bool = True,
                 init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        self.visual_dims = visual_dims
        self.language_dims = language_dims
        self.embed_dims = embed_dims
        self.mask_padding = mask_padding
        self.proj_v = nn.Linear(visual_dims, embed_dims)
        self.proj_l = nn.Linear(language_dims, embed_dims)
        dpr = torch.linspace(0, drop_path_rate, num_layers).tolist() if num_layers else []
        self.vl_blocks = nn.ModuleList([
            MaskedTransformerBlock(embed_dims, num_heads, ffn_ratio * embed_dims, dpr[i])
            for i in range(num_layers)
        ])
        self.seed_blocks = nn.ModuleList([
            MaskedTransformerBlock(embed_dims, num_heads, ffn_ratio * embed_dims, dpr[i])
            for i in range(num_layers)
        ])
        self.norm = nn.LayerNorm(embed_dims)
        scale = embed_dims ** -0.5
        self.seed_embed = nn.Parameter(torch.zeros(1, 1, embed_dims))
        self.proj_patch = nn.Parameter(scale * torch.randn(embed_dims, embed_dims))
        self.proj_cls = nn.Parameter(scale * torch.randn(embed_dims, embed_dims))
        trunc_normal_init_weights(self)
        nn.init.trunc_normal_(self.seed_embed, std=0.02)

    def forward(self, x_v: Tensor, x_l: Tensor, valid: Tensor) -> Dict[str, Tensor]:
        """Fuse.

        Args:
            x_v (Tensor): patch features ``(B, C_v, h, w)``.
            x_l (Tensor): word features ``(B, T, C_l)``.
            valid (Tensor): ``(B, T)`` bool, True at real words.

        Returns:
            dict: ``visual`` ``(B, d, h, w)`` projected patches before fusion (``x_v``),
            ``patches`` ``(B, d, h, w)`` fused patches after ``proj_patch``,
            ``patch_logits`` ``(B, 1, h, w)``, ``classifier`` ``(B, d)``.
        """
        if x_v.dim() != 4 or x_v.shape[1] != self.visual_dims:
            raise ValueError(f'ReSTRFusionEncoder: x_v must be (B, {self.visual_dims}, h, w), '
                             f'got {tuple(x_v.shape)}')
        if x_l.dim() != 3 or x_l.shape[2] != self.language_dims or \
                x_l.shape[0] != x_v.shape[0]:
            raise ValueError(f'ReSTRFusionEncoder: x_l must be ({x_v.shape[0]}, T, '
                             f'{self.language_dims}), got {tuple(x_l.shape)}')
        if tuple(valid.shape) != tuple(x_l.shape[:2]):
            raise ValueError(f'ReSTRFusionEncoder: valid must be {tuple(x_l.shape[:2])}, got '
                             f'{tuple(valid.shape)}')
        B, _, h, w = x_v.shape
        N = h * w
        valid = valid.bool()
        v = self.proj_v(F.normalize(x_v.flatten(2).transpose(1, 2), dim=-1))  # (B, N, d)
        lang = self.proj_l(F.normalize(x_l, dim=-1)) * valid[..., None].to(v.dtype)
        # additive key-padding biases, built once per encoder (None: the official no mask)
        vl_bias = seed_bias = None
        if self.mask_padding:
            vl_bias = padding_bias(torch.cat([valid.new_ones(B, N), valid], dim=1), v.dtype)
            seed_bias = padding_bias(torch.cat([valid, valid.new_ones(B, 1)], dim=1), v.dtype)
        x = torch.cat([v, lang], dim=1)
        for blk in self.vl_blocks:
            x = blk(x, bias=vl_bias)
        patches, words = x[:, :N], x[:, N:]
        x = torch.cat([words, self.seed_embed.expand(B, -1, -1).to(words.dtype)], dim=1)
        for blk in self.seed_blocks:
            x = blk(x, bias=seed_bias)
        seed = self.norm(x[:, -1])  # (B, d)
        classifier = seed @ self.proj_cls
        patches = patches @ self.proj_patch  # (B, N, d)
        logits = torch.einsum('bnd,bd->bn', patches, classifier)
        to_map = lambda t: t.transpose(1, 2).reshape(B, -1, h, w)  # noqa: E731
        return dict(visual=to_map(v), patches=to_map(patches),
                    patch_logits=logits.reshape(B, 1, h, w), classifier=classifier)
