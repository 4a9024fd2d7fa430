from .builder import (
    build_text_tower,
    build_visual_tower,
    create_clip,
    get_clip_config,
    load_clip_state_dict,
    load_tower_weights,
    select_tower_state,
)
from .templates import get_templates, list_templates
from .text_encoder import ContextCLIPTextEncoder, OVCLIPTextEncoder
from .tiny import TINY_CLIP_NAME, ensure_tiny_clip, register_model_configs
from .tokenizer import tokenize
from .vocabularies import SYNTHETIC_CLASSES, get_vocabulary, get_zero_shot_split, list_vocabularies

__all__ = [
    'build_text_tower', 'build_visual_tower', 'create_clip', 'get_clip_config',
    'load_clip_state_dict', 'load_tower_weights', 'select_tower_state', 'tokenize',
    'get_templates', 'list_templates', 'get_vocabulary', 'get_zero_shot_split',
    'list_vocabularies', 'SYNTHETIC_CLASSES', 'OVCLIPTextEncoder', 'ContextCLIPTextEncoder',
    'TINY_CLIP_NAME', 'ensure_tiny_clip'
]

register_model_configs()  # clip_model='ovseg-tiny-clip' (model_configs/*.json)
