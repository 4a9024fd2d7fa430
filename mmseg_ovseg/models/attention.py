"""The attention kernel shared by the CLIP ViT, SAN's side adapter and ``layers.attention``.

It lives in :mod:`mmseg_ovseg.models.layers.fast_path` (``sdpa``: PyTorch's
``scaled_dot_product_attention``, or the query-blocked bfloat16 CPU inference kernel when the
fast-path switch is on); this module keeps the names importable.
"""
from .layers.fast_path import blocked_attention, uses_blocked_attention
from .layers.fast_path import sdpa as attention

__all__ = ['attention', 'blocked_attention', 'uses_blocked_attention']
