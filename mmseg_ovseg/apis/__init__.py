from .config import merge_cfg_options
from .draw import make_palette
from .inferencer import OpenVocabInferencer, ReferringInferencer
from .inputs import list_images, output_stems
from .overlay import draw_overlay
from .palette import class_palette, name_color
from .vocabulary import out_of_vocabulary, resolve_class_names

__all__ = [
    'OpenVocabInferencer', 'ReferringInferencer', 'make_palette', 'out_of_vocabulary',
    'merge_cfg_options', 'list_images', 'output_stems', 'draw_overlay', 'class_palette',
    'name_color', 'resolve_class_names'
]
