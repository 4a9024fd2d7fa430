"""One resizer for learned position embeddings laid out on a 2-D grid."""
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def resize_pos_embed(pos_embed: Tensor,
                     src_hw: Optional[Sequence[int]],
                     dst_hw: Sequence[int],
                     num_prefix: int = 0,
                     mode: str = 'bicubic',
                     align_corners: bool = False,
                     antialias: bool = False) -> Tensor:
    """Resize a position embedding from one row-major grid to another.

    Used by the CLIP ViT (CLS prefix, bicubic or the config's mode), the CLIP ResNet attention
    pool (mean-token prefix, bilinear, square source grid), SAN's side adapter (no prefix,
    batched, bicubic) and SegViT's query grid (no prefix, bicubic).

    Args:
        pos_embed (Tensor): ``(num_prefix + h*w, D)`` or ``(1, num_prefix + h*w, D)``.
        src_hw (tuple[int, int] | None): the stored grid ``(h, w)``; ``None``: a square grid
            inferred from the row count.
        dst_hw (tuple[int, int]): the target grid.
        num_prefix (int): leading rows that are not on the grid (CLS); kept as they are.
        mode (str): ``F.interpolate`` mode.
        align_corners (bool): ``F.interpolate``'s ``align_corners`` (ignored by 'nearest').
        antialias (bool): ``F.interpolate``'s ``antialias`` (every current user: False).

    Returns:
        Tensor: ``(num_prefix + H*W, D)`` (``(1, ...)`` for a 3-D input) in the input's dtype;
        the input itself when the grids are equal.
    """
    batched = pos_embed.dim() == 3
    if (batched and pos_embed.shape[0] != 1) or pos_embed.dim() not in (2, 3):
        raise ValueError(f'position embedding must be (N, D) or (1, N, D), got '
                         f'{tuple(pos_embed.shape)}')
    table = pos_embed[0] if batched else pos_embed
    # int(): under torch.jit.trace (FLOP counting, ONNX) sizes are 0-dim tensors.
    rows = int(table.shape[0]) - num_prefix
    if src_hw is None:
        side = int(round(rows**0.5)) if rows > 0 else 0
        src_hw = (side, side)
        if side * side != rows:
            raise ValueError(f'position embedding has {rows} grid rows, not a square grid')
    elif rows != src_hw[0] * src_hw[1]:
        raise ValueError(f'position embedding has {rows} grid rows, expected '
                         f'{src_hw[0]}x{src_hw[1]}')
    if tuple(src_hw) == tuple(dst_hw):
        return pos_embed
    prefix, grid = table[:num_prefix], table[num_prefix:]
    kwargs = dict(align_corners=align_corners) if mode in ('linear', 'bilinear', 'bicubic',
                                                          'trilinear') else {}
    if antialias:
        kwargs['antialias'] = True
    grid = grid.reshape(1, src_hw[0], src_hw[1], -1).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=tuple(dst_hw), mode=mode, **kwargs)
    grid = grid.permute(0, 2, 3, 1).reshape(dst_hw[0] * dst_hw[1], -1)
    # Autocast may run the interpolation in another dtype; the table keeps the input's.
    grid = grid.to(pos_embed.dtype)
    out = torch.cat([prefix, grid], dim=0) if num_prefix else grid
    return out.unsqueeze(0) if batched else out
