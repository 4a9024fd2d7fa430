"""Layers shared by the methods of the package (one implementation each)."""
from .pos_embed import resize_pos_embed

__all__ = ['resize_pos_embed']
