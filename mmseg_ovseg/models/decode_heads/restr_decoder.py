"""ReSTR's coarse-to-fine segmentation decoder (Kim et al., CVPR 2022, Sec. 3.3, Fig. 2c):
patch-level evidence refined to pixels with bilinear up-sampling and 1x1 convolutions only
(no spatial kernels: "convolution-free").
"""

import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import BaseModule
from mmseg.registry import MODELS
from torch import Tensor


@MODELS.register_module()
class ReSTRCoarseToFineDecoder(BaseModule):
    """``concat[x_v, y_p * p]`` ``(B, 2d, h, w)`` -> pixel logits
    ``(B, 1, h * 2^n, w * 2^n)``.

    ``n`` stages of {bilinear x2 (``align_corners=True``), 1x1 conv halving the channels
    (no bias), LeakyReLU(0.01)}, then a 1x1 conv (no bias) to one channel. Official: ``n = 4``
    with ViT-B/16 (``2d = 1536 -> 768 -> 384 -> 192 -> 96 -> 1``), i.e. back to the input
    resolution.

    Args:
        in_channels (int): ``2d``.
        num_upsamples (int): ``n``; ``2^n`` should equal the ViT patch size.
    """

    def __init__(self, in_channels: int = 1536, num_upsamples: int = 4, init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        if in_channels % (2 ** num_upsamples):
            raise ValueError(f'ReSTRCoarseToFineDecoder: in_channels {in_channels} cannot be '
                             f'halved {num_upsamples} times')
        self.in_channels = in_channels
        self.num_upsamples = num_upsamples
        chans = [in_channels // 2 ** i for i in range(num_upsamples + 1)]
        self.convs = nn.ModuleList(
            [nn.Conv2d(chans[i], chans[i + 1], 1, bias=False) for i in range(num_upsamples)])
        self.act = nn.LeakyReLU(0.01)
        self.cls = nn.Conv2d(chans[-1], 1, 1, bias=False)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_uniform_(m.weight)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f'ReSTRCoarseToFineDecoder: input must be (B, '
                             f'{self.in_channels}, h, w), got {tuple(x.shape)}')
        for conv in self.convs:
            x = F.interpolate(x, scale_factor=2, mode='bilinear', align_corners=True)
            x = self.act(conv(x))
        return self.cls(x)
