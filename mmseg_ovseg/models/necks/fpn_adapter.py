"""DenseCLIP's ViT feature adapters ``fpn1``-``fpn4``: single-scale ViT maps -> a pyramid.

`DenseCLIP <https://arxiv.org/abs/2112.01518>`_ (Rao et al., CVPR 2022) runs its ViT-B/16
variant with the same Semantic FPN as the ResNets, so the four ViT layer outputs (all at
1/16) are first turned into 1/4, 1/8, 1/16 and 1/32 maps. In the official code
(raoyongming/DenseCLIP ``segmentation/denseclip/models.py``) these are the ``fpn1``-``fpn4``
modules of its ``CLIPVisionTransformer``, applied inside the backbone, i.e. *before* the
segmentor concatenates the pixel-text score map to level ``score_concat_index`` (2 for ViT-B,
so FPN sees ``[768, 768, 768 + K, 768]`` channels).
"""
from typing import List, Sequence, Tuple

import torch.nn as nn
from mmcv.cnn import build_activation_layer, build_norm_layer
from mmengine.model import BaseModule
from mmseg.registry import MODELS
from torch import Tensor

# Pyramid layouts of the official code, by ViT patch size: the rescale of each level.
_SUPPORTED_RESCALES = (4, 2, 1, 0.5, 0.25)


@MODELS.register_module()
class FPNAdapter(BaseModule):
    """Per-level adapters ``fpn1``..``fpnN`` of DenseCLIP's ViT backbone.

    Every level starts with a GroupNorm over all channels (``num_groups=1``), then resamples
    by its rescale factor:

    - ``4``: ConvTranspose(2x2, stride 2) -> BN (SyncBN in the official recipe) -> GELU ->
      ConvTranspose(2x2, stride 2);
    - ``2``: ConvTranspose(2x2, stride 2);
    - ``1``: nothing (the module *is* the GroupNorm, as official ``fpn3``);
    - ``0.5`` / ``0.25``: MaxPool 2x2 / 4x4 (stride = kernel).

    The default ``rescales=(4, 2, 1, 0.5)`` is the official ViT-B/16 layout (patch 16: strides
    4, 8, 16, 32); ``(2, 1, 0.5, 0.25)`` is the official layout for patch-8 ViTs. Submodule
    names and indices mirror the official ones (``fpn1.0`` GroupNorm, ``fpn1.1`` deconv,
    ``fpn1.2`` BN, ``fpn1.4`` deconv, ``fpn2.{0,1}``, ``fpn3`` GroupNorm, ``fpn4.0``
    GroupNorm), so official weights map by prefix only (``backbone.fpnI`` -> ``adapter.fpnI``,
    ``tools/model_converters/denseclip2ovseg.py``).

    Why not mmseg's ``Feature2Pyramid``: its levels are the same resampling ops, but without
    the GroupNorm in front of each level, and it offers no hook to insert one (its modules
    are fixed ``nn.Sequential`` built in ``__init__`` and picked by position in
    ``forward``). Wrapping it behind four separate GroupNorms would split each official
    ``fpnI`` across two containers (different state-dict names) and depend on that private
    layout; the ops themselves are one line each, so they are built here from mmcv's
    ``build_norm_layer`` / ``build_activation_layer`` and torch's deconv/pool layers instead.

    Args:
        in_channels (int): channels ``D`` of every ViT map (768 for ViT-B); kept by every
            level (deconvolutions are ``D -> D``).
        rescales (Sequence[float]): resampling factor of each level (see above). Default:
            ``(4, 2, 1, 0.5)``.
        norm_cfg (dict): norm inside the 4x level (official: SyncBN). Default:
            ``dict(type='SyncBN', requires_grad=True)``.
        gn_cfg (dict): the per-level input norm (official: ``GroupNorm(1, D)``). Default:
            ``dict(type='GN', num_groups=1, requires_grad=True)``.
        act_cfg (dict): activation inside the 4x level. Default: ``dict(type='GELU')``.
        init_cfg (dict, optional): mmengine init config. Default: None (PyTorch's default
            init, as the official modules).

    Shapes:
        input: a sequence of ``len(rescales)`` maps ``(B, D, h, w)`` (for ViT-B/16 at 640:
        four ``(B, 768, 40, 40)`` maps of layers 3, 5, 7, 11);
        output: a tuple of ``(B, D, h * r, w * r)`` maps, ``r`` the level's rescale (at 640:
        ``(B, 768, 160, 160)``, ``(B, 768, 80, 80)``, ``(B, 768, 40, 40)``,
        ``(B, 768, 20, 20)``; strides 4, 8, 16, 32 for patch 16). Max pooling floors odd sizes.
    """

    def __init__(self,
                 in_channels: int,
                 rescales: Sequence[float] = (4, 2, 1, 0.5),
                 norm_cfg: dict = dict(type='SyncBN', requires_grad=True),
                 gn_cfg: dict = dict(type='GN', num_groups=1, requires_grad=True),
                 act_cfg: dict = dict(type='GELU'),
                 init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        bad = [r for r in rescales if r not in _SUPPORTED_RESCALES]
        if bad or not rescales:
            raise ValueError(f'FPNAdapter: rescales must be taken from {_SUPPORTED_RESCALES}, '
                             f'got {list(rescales)}')
        self.in_channels = in_channels
        self.rescales = tuple(rescales)
        self.out_channels = [in_channels] * len(self.rescales)
        for i, rescale in enumerate(self.rescales):
            self.add_module(f'fpn{i + 1}',
                            self._level(in_channels, rescale, norm_cfg, gn_cfg, act_cfg))

    @staticmethod
    def _level(dim: int, rescale: float, norm_cfg: dict, gn_cfg: dict,
               act_cfg: dict) -> nn.Module:
        gn = build_norm_layer(gn_cfg, dim)[1]
        if rescale == 1:
            return gn

        def deconv():
            return nn.ConvTranspose2d(dim, dim, kernel_size=2, stride=2)

        if rescale == 4:
            ops = [deconv(), build_norm_layer(norm_cfg, dim)[1],
                   build_activation_layer(act_cfg), deconv()]
        elif rescale == 2:
            ops = [deconv()]
        else:
            k = int(round(1 / rescale))
            ops = [nn.MaxPool2d(kernel_size=k, stride=k)]
        return nn.Sequential(gn, *ops)

    @property
    def levels(self) -> List[nn.Module]:
        return [getattr(self, f'fpn{i + 1}') for i in range(len(self.rescales))]

    def forward(self, inputs: Sequence[Tensor]) -> Tuple[Tensor, ...]:
        if len(inputs) != len(self.rescales):
            raise ValueError(f'FPNAdapter: expected {len(self.rescales)} maps (one per '
                             f'rescale {list(self.rescales)}), got {len(inputs)}')
        return tuple(level(x) for level, x in zip(self.levels, inputs))
