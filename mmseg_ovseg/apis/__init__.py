from .config import merge_cfg_options
from .inferencer import OpenVocabInferencer, ReferringInferencer, make_palette, out_of_vocabulary
from .inputs import list_images, output_stems
from .overlay import draw_overlay
from .palette import class_palette, name_color

__all__ = [
    'OpenVocabInferencer', 'ReferringInferencer', 'make_palette', 'out_of_vocabulary',
    'merge_cfg_options', 'list_images', 'output_stems', 'draw_overlay', 'class_palette',
    'name_color'
]
