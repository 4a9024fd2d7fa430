"""Parameter-free head that scores its input as segmentation logits (DenseCLIP's auxiliary
pixel-text loss)."""
from typing import Optional

from mmseg.models.decode_heads.decode_head import BaseDecodeHead
from mmseg.registry import MODELS
from torch import Tensor


@MODELS.register_module()
class IdentityHead(BaseDecodeHead):
    """Decode head whose logits are its input, unchanged.

    `DenseCLIP <https://arxiv.org/abs/2112.01518>`_, Sec. 3.4 ("Instantiations", semantic
    segmentation): the pixel-text score map ``s`` is already a low-resolution segmentation, so
    an auxiliary loss ``L_aux = CE(Softmax(s / tau), y)`` is put on it directly. The
    :class:`DenseCLIP` segmentor feeds ``s / tau`` to this head; mmseg's
    :meth:`BaseDecodeHead.loss_by_feat` upsamples it bilinearly to the label size and applies
    ``loss_decode`` (official: cross-entropy, weight 0.4, ignore 255). The head has no
    parameters (no ``conv_seg``), so it follows any vocabulary size.

    Args:
        num_classes (int): classes (the score map's channels); set by the segmentor.
        in_channels (int): unused by the computation (mmseg bookkeeping). Default: 1.
        channels (int): unused (mmseg bookkeeping). Default: 1.
        **kwargs: other :class:`BaseDecodeHead` arguments (``loss_decode``,
            ``align_corners``, ``ignore_index``, ...).

    Shapes:
        input ``(B, K, h, w)`` -> output the same tensor.
    """

    def __init__(self, in_channels: int = 1, channels: int = 1,
                 init_cfg: Optional[dict] = None, **kwargs):
        kwargs.setdefault('dropout_ratio', 0.0)
        super().__init__(in_channels, channels, init_cfg=init_cfg, **kwargs)
        del self.conv_seg  # parameter-free: the input already holds one score per class

    def forward(self, inputs: Tensor) -> Tensor:
        if not isinstance(inputs, Tensor) or inputs.dim() != 4:
            raise ValueError('IdentityHead expects a (B, K, h, w) score map, got '
                             f'{type(inputs).__name__}')
        return inputs
