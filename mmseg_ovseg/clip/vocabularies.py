"""Class-name vocabularies of the benchmark datasets and their zero-shot splits.

Registered vocabularies, each a list of class names in label-index order:

- ``coco_stuff171``, ``ade150``, ``pc59``, ``voc20``: read from mmseg's class lists
  (``mmseg.utils.get_classes``: ``'cocostuff'``, ``'ade'``, ``'pcontext'``, ``'voc'``, the
  same lists as the datasets' ``METAINFO['classes']``), with names stripped (mmseg spells ADE's
  'bed' as ``'bed '``) and VOC's ``'background'`` dropped. These are mmseg's spellings: SAN's
  own registration says ``'diningtable'`` for PC-59's ``'table'`` (index 49) and ``'tv'`` for
  VOC's ``'tvmonitor'`` (index 19); its COCO-Stuff-171 list equals mmseg's.
- ``ade847``, ``pc459``: ``clip/vocabularies/<name>.txt``, the ADE20K-full and
  Pascal-Context-459 category names of SAN's official dataset registration
  (``san/data/datasets/register_ade20k_full.py`` and ``register_pcontext.py``), synonyms kept
  as one comma-separated name, as SAN prompts them; mmseg has neither dataset.
- ``synthetic``: :data:`SYNTHETIC_CLASSES` of the embedded synthetic shapes dataset.
- ``concepts``: ``clip/vocabularies/concepts.txt``, the 55 classes of the generated zero-shot
  benchmark over the tiny CLIP's concept space (``mmseg_ovseg/datasets/concept_seg.py``).

Lines starting with ``'#'`` in the ``.txt`` files are provenance comments.
"""
import os
import os.path as osp
from typing import List, Sequence, Tuple, Union

VOCAB_DIR = osp.join(osp.dirname(osp.abspath(__file__)), 'vocabularies')

# The classes of the synthetic shapes dataset; mmseg_ovseg.datasets.synthetic imports them.
SYNTHETIC_CLASSES = ('background', 'red circle', 'green square', 'blue triangle',
                     'yellow stripes', 'purple dots', 'orange ring', 'cyan checker')

# Vocabularies read from mmseg: name -> (``mmseg.utils.get_classes`` alias, leading names
# dropped).
MMSEG_VOCABULARIES = {
    'coco_stuff171': ('cocostuff', ()),
    'ade150': ('ade', ()),
    'pc59': ('pcontext', ()),
    'voc20': ('voc', ('background', )),
}

# Unseen class indices of the zero-shot (inductive / transductive) benchmarks.
_UNSEEN = {
    # ZS3Net / ZegCLIP VOC split: pottedplant, sheep, sofa, train, tvmonitor.
    'voc20': list(range(15, 20)),
    # ZegCLIP COCO-Stuff split (official configs/coco/*zero*.py ``novel_class``): cow, giraffe,
    # suitcase, frisbee, skateboard, carrot, scissors, cardboard, clouds, grass, playingfield,
    # river, road, tree, wall-concrete.
    'coco_stuff171': [19, 23, 28, 29, 36, 51, 76, 88, 94, 112, 133, 136, 137, 157, 160],
    # UNVERIFIED: ZegCLIP never released its Pascal-Context config (its issues #18, #29). This is
    # the 10-unseen split of ZS3Net (Bucher et al., 2019) by name: aeroplane, bird, boat, cat,
    # cow, fence, keyboard, motorbike, sofa, tvmonitor (indices into ``pc59``).
    'pc59': [0, 6, 7, 14, 19, 24, 31, 33, 48, 54],
    # The last two synthetic classes: 'orange ring', 'cyan checker'.
    'synthetic': [6, 7],
    # Generated concept benchmark (datasets/concept_seg.py): one novel colour-shape composition
    # per colour (each colour and shape also occurs in seen classes) and one object kind, all
    # concepts the tiny CLIP classifies zero-shot (docs/open_vocab.md): red circle, orange ring,
    # yellow star, green triangle, cyan triangle, blue circle, purple star, pink ring, flower.
    'concepts': [1, 11, 16, 21, 27, 31, 40, 47, 53],
}


def list_vocabularies() -> List[str]:
    """Names of the registered vocabularies."""
    names = {f[:-len('.txt')] for f in os.listdir(VOCAB_DIR) if f.endswith('.txt')}
    return sorted(names | set(MMSEG_VOCABULARIES) | {'synthetic'})


def _check(names: Sequence, source: str) -> List[str]:
    names = list(names)
    if not names:
        raise ValueError(f'Empty vocabulary from {source}')
    bad = [(i, n) for i, n in enumerate(names) if not isinstance(n, str)]
    if bad:
        raise TypeError(f'Vocabulary from {source} has non-string entries (index, value): '
                        f'{bad[:10]}')
    names = [n.strip() for n in names]
    empty = [i for i, n in enumerate(names) if not n]
    if empty:
        raise ValueError(f'Vocabulary from {source} has empty names at indices {empty[:10]}')
    seen, dups = set(), []
    for n in names:
        if n in seen and n not in dups:
            dups.append(n)
        seen.add(n)
    if dups:
        raise ValueError(f'Vocabulary from {source} has duplicate names: {dups[:10]}')
    return names


def _read_txt(path: str) -> List[str]:
    try:
        with open(path, encoding='utf-8') as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise OSError(f'Cannot read vocabulary file {path!r}: {e}') from e
    return [ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith('#')]


def _from_mmseg(name: str) -> List[str]:
    from mmseg.utils import get_classes  # lazy: mmseg.utils pulls in mmengine

    alias, dropped = MMSEG_VOCABULARIES[name]
    names = list(get_classes(alias))
    if tuple(n.strip() for n in names[:len(dropped)]) != dropped:
        raise ValueError(f"mmseg's get_classes({alias!r}) starts with {names[:len(dropped)]}, "
                         f'expected {list(dropped)} (vocabulary {name!r} drops them)')
    return names[len(dropped):]


def get_vocabulary(spec: Union[str, Sequence[str]]) -> List[str]:
    """Resolve a vocabulary spec to a list of class names.

    Args:
        spec: one of
            - a registered name (see :func:`list_vocabularies`), e.g. ``'ade150'``;
            - a list/tuple of class names;
            - a path to a ``.txt`` file, one name per line (blank lines and lines starting
              with ``'#'`` are skipped);
            - a comma-separated string, e.g. ``'cat, dog, grass'``.

    Returns:
        list[str] of stripped, unique, non-empty names, in label-index order.
    """
    if isinstance(spec, (list, tuple)):
        return _check(spec, 'the given list')
    if not isinstance(spec, str):
        raise TypeError(f'vocabulary must be a name, a list of names, a .txt path or a '
                        f'comma-separated string, got {type(spec).__name__}')
    key = spec.strip()
    if key == 'synthetic':
        return _check(SYNTHETIC_CLASSES, "vocabulary 'synthetic'")
    if key in MMSEG_VOCABULARIES:
        return _check(_from_mmseg(key), f'vocabulary {key!r} (mmseg.utils.get_classes)')
    if key in list_vocabularies():
        return _check(_read_txt(osp.join(VOCAB_DIR, key + '.txt')), f'vocabulary {key!r}')
    if key.endswith('.txt') or osp.isfile(key):
        if not osp.isfile(key):
            raise FileNotFoundError(f'Vocabulary file not found: {key!r}')
        return _check(_read_txt(key), f'file {key!r}')
    if ',' in key:
        return _check(key.split(','), f'string {key!r}')
    raise ValueError(f'Unknown vocabulary {spec!r}; known names: {list_vocabularies()}. Pass '
                     'a list, a .txt path or a comma-separated string for a custom one.')


def get_zero_shot_split(spec: Union[str, dict, Sequence[int]],
                        num_classes: int = None) -> Tuple[List[int], List[int]]:
    """Seen and unseen class indices of a zero-shot benchmark.

    Args:
        spec: a registered split name (``'voc20'``, ``'coco_stuff171'``, ``'pc59'``,
            ``'synthetic'``), a list of unseen indices, or a dict with ``unseen`` (and
            optionally ``seen``) index lists, as written in a config.
        num_classes: vocabulary size; required for explicit index lists, checked otherwise.

    Returns:
        (seen_indices, unseen_indices), both sorted lists of ints.
    """
    if isinstance(spec, str):
        if spec not in _UNSEEN:
            raise ValueError(f'No zero-shot split for {spec!r}; known: {sorted(_UNSEEN)}. '
                             'Pass explicit unseen indices instead.')
        total = len(get_vocabulary(spec))
        if num_classes is not None and num_classes != total:
            raise ValueError(f'Split {spec!r} is for {total} classes, got num_classes='
                             f'{num_classes}')
        unseen, seen = list(_UNSEEN[spec]), None
        num_classes = total
    else:
        if isinstance(spec, dict):
            if 'unseen' not in spec:
                raise KeyError(f"zero-shot split dict needs key 'unseen', got {sorted(spec)}")
            unseen, seen = list(spec['unseen']), spec.get('seen')
        elif isinstance(spec, (list, tuple)):
            unseen, seen = list(spec), None
        else:
            raise TypeError(f'zero-shot split must be a name, a list of unseen indices or a '
                            f"dict(unseen=..., seen=...), got {type(spec).__name__}")
        if num_classes is None:
            raise ValueError('get_zero_shot_split: num_classes is required with explicit '
                             'indices')
    for name, idx in (('unseen', unseen), ('seen', seen or [])):
        bad = [i for i in idx if not isinstance(i, int) or isinstance(i, bool)
               or not 0 <= i < num_classes]
        if bad:
            raise ValueError(f'{name} indices out of range [0, {num_classes}): {bad[:10]}')
        if len(set(idx)) != len(idx):
            raise ValueError(f'{name} indices have duplicates: {sorted(idx)}')
    if seen is None:
        seen = [i for i in range(num_classes) if i not in set(unseen)]
    else:
        seen = list(seen)
        overlap = sorted(set(seen) & set(unseen))
        if overlap:
            raise ValueError(f'indices both seen and unseen: {overlap}')
    return sorted(seen), sorted(unseen)
