from .builder import (build_text_tower, build_visual_tower, create_clip, get_clip_config,
                      load_clip_state_dict, load_tower_weights, select_tower_state)

__all__ = [
    'build_text_tower', 'build_visual_tower', 'create_clip', 'get_clip_config',
    'load_clip_state_dict', 'load_tower_weights', 'select_tower_state'
]
