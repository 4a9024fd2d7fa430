"""CLIP ModifiedResNet backbone with dense attention pooling (DenseCLIP)."""
import copy
from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from mmengine.model import BaseModule
from mmseg.registry import MODELS
from open_clip.modified_resnet import ModifiedResNet

from mmseg_ovseg.clip.builder import (
    ClipModel,
    build_visual_tower,
    get_clip_config,
    load_tower_weights,
)
from mmseg_ovseg.models.layers import resize_pos_embed


def resize_attnpool_pos_embed(pos_embed: torch.Tensor,
                              size: Tuple[int, int],
                              mode: str = 'bilinear') -> torch.Tensor:
    """Resize an attention-pool position embedding to a new grid.

    Args:
        pos_embed (Tensor): ``(1 + g*g, C)``: the pooled (mean) token's embedding followed by a
            square ``g x g`` grid in row-major order.
        size (tuple[int, int]): target grid ``(h, w)``.
        mode (str): interpolation mode (DenseCLIP uses 'bilinear', ``align_corners=False``).

    Returns:
        Tensor: ``(1 + h*w, C)``. At ``size == (g, g)`` the result is the input itself.
    """
    return resize_pos_embed(pos_embed, None, size, num_prefix=1, mode=mode)


@MODELS.register_module()
class CLIPResNetWithAttention(BaseModule):
    """CLIP's ModifiedResNet image tower with dense attention pooling.

    `DenseCLIP <https://arxiv.org/abs/2112.01518>`_, Sec. 3.2 ("Language-guided dense
    prediction"): CLIP ResNets end in an attention pool whose query is the mean of the C5
    map. DenseCLIP runs that multi-head self-attention over the mean token *and* every spatial
    token, ``[z_bar, z] = MHSA([x_bar, x])``: ``z_bar`` is CLIP's image embedding, ``z`` a
    language-compatible dense map. As in the official code, each spatial position is a full
    attention query (q/k/v projections of all ``1 + HW`` tokens, softmax over all of them,
    then ``c_proj``), so ``z`` is *not* the value-only ``c_proj(v_proj(x))`` shortcut of
    MaskCLIP. The attnpool position embedding (a ``g x g`` grid for CLIP's input size) is
    interpolated (bilinear, ``align_corners=False``, as DenseCLIP) to the input's C5 grid in
    every forward; at the native size this is the identity, so the global output then equals
    CLIP's image embedding.

    The open_clip tower (stem of 3 convs + avgpool, anti-aliased bottlenecks, ``attnpool``) is
    held as ``self.visual``, so parameter names equal a CLIP checkpoint's ``visual.*`` keys and
    OpenAI RN50/RN101 weights load without conversion.

    Args:
        clip_model (str | dict): open_clip ResNet name ('RN50', 'RN101', 'RN50x4', ...) or a
            config dict ``dict(embed_dim, vision_cfg=dict(layers=[...], width, image_size,
            head_width), text_cfg, ...)`` (tiny towers for tests).
        pretrained (str, optional): local CLIP checkpoint; its ``visual.*`` keys are loaded
            strictly (``ValueError`` listing the keys if the architecture differs) by
            :meth:`init_weights` (mmengine's convention: the Runner calls it before training;
            loading a full checkpoint afterwards, as ``tools/test.py`` and
            ``mmseg.apis.init_model`` do, never reads this file).
        input_resolution (int, optional): train crop size the attnpool position-embedding
            *parameter* is sized for (``input_resolution // 32`` grid). DenseCLIP uses 512:
            the checkpoint's 7x7 grid is resized bilinearly to 16x16 once at load, then to the
            input grid in forward, which reproduces the official two-step resize exactly.
            None keeps the checkpoint's own grid. Default: None.
        out_indices (Sequence[int]): stages (0..3 = C2..C5) whose maps are returned.
            Default: (0, 1, 2, 3).
        output_attnpool (bool): append dense and global outputs of the attention pool.
            Default: True.
        frozen (bool): freeze the whole tower (parameters and BatchNorm statistics).
            Default: False.
        frozen_stages (int): -1 freezes nothing, 0 the stem, k in 1..4 the stem and stages
            1..k (mmseg ResNet semantics; the attnpool is frozen only by ``frozen``).
            Default: -1.
        interpolate_mode (str): position-embedding resize mode. Default: 'bilinear'.
        init_cfg (dict, optional): mmengine init config. Default: None.

    Shapes:
        input: ``(B, 3, H, W)``, H and W multiples of 32.
        output: tuple of ``(B, 4*width*2**i, H/2**(i+2), W/2**(i+2))`` for ``i`` in
        ``out_indices`` (256/512/1024/2048 channels for RN50), then, if ``output_attnpool``,
        dense ``(B, C_out, H/32, W/32)`` and global ``(B, C_out)``, ``C_out`` = CLIP's
        embed dim (1024 for RN50, 512 for RN101).
    """

    def __init__(self,
                 clip_model: ClipModel = 'RN50',
                 pretrained: Optional[str] = None,
                 input_resolution: Optional[int] = None,
                 out_indices: Sequence[int] = (0, 1, 2, 3),
                 output_attnpool: bool = True,
                 frozen: bool = False,
                 frozen_stages: int = -1,
                 interpolate_mode: str = 'bilinear',
                 init_cfg: Optional[dict] = None):
        super().__init__(init_cfg=init_cfg)
        if pretrained is not None and init_cfg is not None:
            raise ValueError('CLIPResNetWithAttention: give `pretrained` or `init_cfg`, not '
                             'both')
        out_indices = tuple(out_indices)
        if not out_indices or any(i not in range(4) for i in out_indices):
            raise ValueError(f'out_indices must be a non-empty subset of 0..3, got '
                             f'{out_indices}')
        if frozen_stages not in range(-1, 5):
            raise ValueError(f'frozen_stages must be in -1..4, got {frozen_stages}')
        self.out_indices = out_indices
        self.output_attnpool = output_attnpool
        self.frozen = frozen
        self.frozen_stages = frozen_stages
        self.interpolate_mode = interpolate_mode

        cfg = get_clip_config(clip_model)
        if not isinstance(cfg['vision_cfg'].get('layers'), (list, tuple)):
            raise ValueError(f'CLIPResNetWithAttention needs a CLIP ResNet (vision_cfg.layers '
                             f'a list of 4 depths), got {clip_model!r}; use '
                             'CLIPVisionTransformer for ViT towers')
        native_cfg = copy.deepcopy(cfg)
        if input_resolution is not None:
            cfg['vision_cfg'] = dict(cfg['vision_cfg'], image_size=input_resolution)
        self.visual: ModifiedResNet = build_visual_tower(cfg)
        width = cfg['vision_cfg'].get('width', 64)
        self.stage_channels = tuple(width * 4 * 2**i for i in range(4))
        self.embed_dim = cfg['embed_dim']

        self.pretrained = pretrained
        self._native_cfg = native_cfg
        self._freeze()

    def init_weights(self) -> None:
        """mmengine's weight initialisation, then the CLIP weights of ``pretrained``
        (copied into the existing parameters, so an optimizer built before keeps them)."""
        first = not self.is_init
        super().init_weights()
        if first and self.pretrained is not None:
            self._load_clip(self.pretrained, self._native_cfg)

    def _load_clip(self, pretrained: str, native_cfg: dict) -> None:
        """Strictly load ``visual.*`` of a CLIP checkpoint, resizing the attnpool grid."""
        grid = self.visual.image_size // 32
        if grid == native_cfg['vision_cfg'].get('image_size', 224) // 32:
            load_tower_weights(self.visual, pretrained, 'visual')
            return
        # Check and load at the checkpoint's grid into a stand-in position parameter, then
        # resize it once, as DenseCLIP does when loading.
        pool = self.visual.attnpool
        pos = pool.positional_embedding
        native_grid = native_cfg['vision_cfg'].get('image_size', 224) // 32
        pool.positional_embedding = torch.nn.Parameter(
            pos.new_empty(native_grid**2 + 1, pos.shape[1]), requires_grad=pos.requires_grad)
        try:
            load_tower_weights(self.visual, pretrained, 'visual')
            with torch.no_grad():
                pos.copy_(resize_attnpool_pos_embed(pool.positional_embedding.detach(),
                                                    (grid, grid), self.interpolate_mode))
        finally:
            pool.positional_embedding = pos

    def _frozen_modules(self):
        v = self.visual
        if self.frozen:
            return [v]
        mods = []
        if self.frozen_stages >= 0:
            mods += [v.conv1, v.bn1, v.conv2, v.bn2, v.conv3, v.bn3]
        mods += [getattr(v, f'layer{i}') for i in range(1, self.frozen_stages + 1)]
        return mods

    def _freeze(self) -> None:
        for module in self._frozen_modules():
            module.eval()
            for param in module.parameters():
                param.requires_grad = False

    def train(self, mode: bool = True):
        """Keep frozen parts (and their BatchNorm statistics) in eval mode."""
        super().train(mode)
        if mode:
            self._freeze()
        return self

    def attnpool(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Attention pooling with every C5 position as a query (DenseCLIP Sec. 3.2).

        Args:
            x (Tensor): C5 map ``(B, C, h, w)``.

        Returns:
            tuple: global ``(B, C_out)`` (the mean-token query: CLIP's image embedding) and
            dense ``(B, C_out, h, w)`` (one query per position).
        """
        pool = self.visual.attnpool
        B, C, h, w = x.shape
        tokens = x.flatten(2).permute(2, 0, 1)  # (hw, B, C)
        tokens = torch.cat([tokens.mean(dim=0, keepdim=True), tokens], dim=0)
        pos = resize_attnpool_pos_embed(pool.positional_embedding, (h, w),
                                        self.interpolate_mode)
        tokens = tokens + pos[:, None, :].to(tokens.dtype)
        # Same projections and head split as CLIP's pool, but all 1 + hw tokens are queries.
        out, _ = F.multi_head_attention_forward(
            query=tokens, key=tokens, value=tokens,
            embed_dim_to_check=C,
            num_heads=pool.num_heads,
            in_proj_weight=None,
            in_proj_bias=torch.cat([pool.q_proj.bias, pool.k_proj.bias, pool.v_proj.bias]),
            bias_k=None,
            bias_v=None,
            add_zero_attn=False,
            dropout_p=0.,
            out_proj_weight=pool.c_proj.weight,
            out_proj_bias=pool.c_proj.bias,
            training=self.training,
            need_weights=False,
            use_separate_proj_weight=True,
            q_proj_weight=pool.q_proj.weight,
            k_proj_weight=pool.k_proj.weight,
            v_proj_weight=pool.v_proj.weight)
        out = out.permute(1, 2, 0)  # (B, C_out, 1 + hw)
        return out[:, :, 0], out[:, :, 1:].reshape(B, -1, h, w)

    def forward(self, x: torch.Tensor) -> tuple:
        """``(B, 3, H, W)`` -> stage maps at ``out_indices`` [+ dense ``(B, C, h, w)``,
        global ``(B, C)``], the same flat layout as ``CLIPVisionTransformer(output_dense=True)``."""
        v = self.visual
        x = v.stem(x.to(v.conv1.weight.dtype))
        last = 3 if self.output_attnpool else max(self.out_indices)
        outs = []
        for i in range(last + 1):
            x = getattr(v, f'layer{i + 1}')(x)
            if i in self.out_indices:
                outs.append(x)
        if self.output_attnpool:
            glob, dense = self.attnpool(x)
            outs += [dense, glob]
        return tuple(outs)
