"""Layers shared by the methods of the package (one implementation each)."""
from .attention import MultiheadAttention
from .init import trunc_normal_init_weights
from .mask_inference import semantic_inference
from .mlp import MLP
from .norm import LayerNorm2d
from .pos_embed import resize_pos_embed

__all__ = [
    'LayerNorm2d', 'MLP', 'MultiheadAttention', 'resize_pos_embed', 'semantic_inference',
    'trunc_normal_init_weights'
]
