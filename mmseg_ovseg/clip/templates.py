"""Prompt templates that turn a class name into sentences for the CLIP text tower.

Named sets:

- ``'vild'``: the 14 templates of ViLD (Gu et al., 2022) that SAN (Xu et al., CVPR 2023,
  Sec. 4.1 "Implementation details") ensembles for every vocabulary.
- ``'imagenet'``: CLIP's 80 ImageNet zero-shot templates (Radford et al., 2021, Sec. 3.1.4),
  taken from the installed open_clip (``OPENAI_IMAGENET_TEMPLATES``).
- ``'single'``: ``['a photo of a {}.']``.
- ``'zegclip'``: the 15 templates ZegCLIP (Zhou et al., CVPR 2023) ensembles for its COCO-Stuff
  text embeddings; they are the template list of the official repository's
  ``configs/_base_/datasets/text_embedding/get_embedding.ipynb`` (checked word by word in
  ``tests/test_zegclip.py``).
- ``'zegclip_voc'``: ``['a photo of a {}']`` -- no final period: the single template the same
  notebook used for the official VOC text embeddings (``voc12_single.npy``), and the default
  of the official segmentor (``models/segmentor/zegclip.py``).
"""
from typing import List, Sequence, Union

VILD_TEMPLATES = (
    'a photo of a {}.',
    'This is a photo of a {}',
    'There is a {} in the scene',
    'There is the {} in the scene',
    'a photo of a {} in the scene',
    'a photo of a small {}.',
    'a photo of a medium {}.',
    'a photo of a large {}.',
    'This is a photo of a small {}.',
    'This is a photo of a medium {}.',
    'This is a photo of a large {}.',
    'There is a small {} in the scene.',
    'There is a medium {} in the scene.',
    'There is a large {} in the scene.',
)

ZEGCLIP_TEMPLATES = (
    'a photo of a {}.',
    'a photo of a small {}.',
    'a photo of a medium {}.',
    'a photo of a large {}.',
    'This is a photo of a {}.',
    'This is a photo of a small {}.',
    'This is a photo of a medium {}.',
    'This is a photo of a large {}.',
    'a {} in the scene.',
    'a photo of a {} in the scene.',
    'There is a {} in the scene.',
    'There is the {} in the scene.',
    'This is a {} in the scene.',
    'This is the {} in the scene.',
    'This is one {} in the scene.',
)

SINGLE_TEMPLATES = ('a photo of a {}.', )

ZEGCLIP_VOC_TEMPLATES = ('a photo of a {}', )


def _imagenet_templates() -> tuple:
    # open_clip stores them as callables c -> sentence; render them with a '{}' slot.
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES
    return tuple(t('{}') for t in OPENAI_IMAGENET_TEMPLATES)


_NAMED = {
    'vild': lambda: VILD_TEMPLATES,
    'imagenet': _imagenet_templates,
    'single': lambda: SINGLE_TEMPLATES,
    'zegclip': lambda: ZEGCLIP_TEMPLATES,
    'zegclip_voc': lambda: ZEGCLIP_VOC_TEMPLATES,
}


def list_templates() -> List[str]:
    """Names accepted by :func:`get_templates`."""
    return sorted(_NAMED)


def get_templates(spec: Union[str, Sequence[str]]) -> List[str]:
    """Resolve a template spec to a list of format strings with exactly one ``'{}'`` slot.

    Args:
        spec: a named set (``'vild'``, ``'imagenet'``, ``'single'``, ``'zegclip'``,
            ``'zegclip_voc'``) or a
            list/tuple of strings, each containing ``'{}'`` once.

    Returns:
        list[str], a new list (callers may modify it).
    """
    if isinstance(spec, str):
        if spec not in _NAMED:
            raise ValueError(f'Unknown template set {spec!r}; known: {list_templates()}, '
                             "or pass a list of strings containing '{}'")
        return list(_NAMED[spec]())
    if not isinstance(spec, (list, tuple)):
        raise TypeError(f'templates must be a template-set name or a list of strings, '
                        f'got {type(spec).__name__}')
    if len(spec) == 0:
        raise ValueError('templates: empty list')
    for i, template in enumerate(spec):
        if not isinstance(template, str):
            raise TypeError(f'templates[{i}] must be a string, got {type(template).__name__}: '
                            f'{template!r}')
        if template.count('{}') != 1:
            raise ValueError(f"templates[{i}] = {template!r} must contain exactly one '{{}}' "
                             'slot for the class name')
    return list(spec)
