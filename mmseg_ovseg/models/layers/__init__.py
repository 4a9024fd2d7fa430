"""Layers shared by the methods of the package (one implementation each)."""
from .attention import MultiheadAttention
from .fast_path import WeightCache, sdpa, set_fast_path, use_fast_path
from .init import trunc_normal_init_weights
from .mask_inference import semantic_inference
from .mlp import MLP
from .norm import LayerNorm2d
from .pos_embed import resize_pos_embed
from .transformer import MaskedTransformerBlock, padding_bias, sinusoidal_positions

# The context manager fast_path.fast_path is not re-exported: its name would hide the module.
__all__ = [
    'LayerNorm2d', 'MLP', 'MaskedTransformerBlock', 'MultiheadAttention', 'WeightCache',
    'padding_bias', 'resize_pos_embed', 'sdpa', 'semantic_inference', 'set_fast_path',
    'sinusoidal_positions', 'trunc_normal_init_weights', 'use_fast_path'
]
