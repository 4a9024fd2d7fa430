"""What the user asks a model to find: class names for a class model, a sentence for a
referring one.

- :func:`resolve_class_names`: the vocabulary options of ``tools/infer.py`` (``--classes``,
  ``--classes-file``, ``--vocabulary``) and of the web page (``tools/webui.py``), one syntax
  and one set of one-line errors;
- :func:`with_background`: the inferencer's rule for a lone class;
- :func:`out_of_vocabulary` and :func:`check_sentences`: a referring model's word vocabulary.

The model resolves vocabulary specs itself
(:meth:`~mmseg_ovseg.models.segmentors.TextEncoderDecoder.set_vocabulary`); these functions
produce the class list it is given.
"""
import os.path as osp
import warnings
from typing import Dict, List, Optional, Sequence, Union

__all__ = ['split_names', 'resolve_class_names', 'with_background', 'out_of_vocabulary',
           'check_sentences']

#: The names the user sees for the options of :func:`resolve_class_names` (the CLI's).
DEFAULT_FLAGS = dict(classes='--classes', classes_file='--classes-file',
                     vocabulary='--vocabulary')


def split_names(text: str) -> List[str]:
    """Class names of ``--classes``: separated by commas or newlines, stripped."""
    return [n.strip() for n in text.replace('\n', ',').split(',') if n.strip()]


def resolve_class_names(classes: Optional[str] = None, classes_file: Optional[str] = None,
                        vocabulary: Optional[str] = None,
                        flags: Optional[Dict[str, str]] = None) -> Optional[List[str]]:
    """The vocabulary of ``--classes`` / ``--classes-file`` / ``--vocabulary`` (at most one),
    or None for the model's own classes.

    Args:
        classes (str, optional): names separated by commas or newlines (``'cat'`` is the one
            class "cat", never a registered vocabulary).
        classes_file (str, optional): a text file, one name per line.
        vocabulary (str, optional): a registered vocabulary name (``ade150``, ...).
        flags (dict, optional): the names the user sees for ``'classes'``,
            ``'classes_file'``, ``'vocabulary'`` (default: the CLI flags).

    Raises:
        ValueError: one line naming the option: no name in the text or file, an unknown
            vocabulary, duplicate names, two options at once.
    """
    flags = dict(DEFAULT_FLAGS, **(flags or {}))
    given = [k for k, v in (('classes', classes), ('classes_file', classes_file),
                            ('vocabulary', vocabulary)) if v is not None]
    if len(given) > 1:
        raise ValueError(f'{flags[given[0]]} and {flags[given[1]]} exclude each other; '
                         'give one of them')
    names = None
    if classes is not None:
        names = split_names(classes)
        if not names:
            raise ValueError(f'{flags["classes"]} {classes!r} holds no class name')
    elif classes_file is not None:
        if not osp.isfile(classes_file):
            raise ValueError(f'{flags["classes_file"]}: file not found: {classes_file}')
        from mmseg_ovseg.clip.vocabularies import _read_txt
        names = _read_txt(classes_file)
        if not names:
            raise ValueError(f'{flags["classes_file"]} {classes_file} holds no class name')
    elif vocabulary is not None:
        from mmseg_ovseg.clip.vocabularies import get_vocabulary, list_vocabularies
        if vocabulary not in list_vocabularies():
            raise ValueError(f'{flags["vocabulary"]}: unknown vocabulary {vocabulary!r}; '
                             f'known: {", ".join(list_vocabularies())} (custom names: '
                             f'{flags["classes"]} or {flags["classes_file"]})')
        names = get_vocabulary(vocabulary)
    if names is not None:
        dups = sorted({n for n in names if names.count(n) > 1})
        if dups:
            raise ValueError(f'duplicate class names: {", ".join(dups)}')
    return names


def with_background(names: List[str]) -> List[str]:
    """``names``, with ``'background'`` (``'other'`` if the class is itself background) added
    as class 0 to a lone class, with a warning: an argmax over one class paints every pixel
    with it."""
    if len(names) != 1:
        return names
    other = 'background' if names[0].strip().casefold() != 'background' else 'other'
    warnings.warn(f'one class {names[0]!r}: every pixel would be {names[0]!r}; '
                  f'{other!r} is added as class 0 (give two or more names to choose '
                  'the alternatives yourself)')
    return [other] + list(names)


def out_of_vocabulary(language_encoder, sentence: str) -> List[str]:
    """Words of ``sentence`` (split as the model splits them) that its word vocabulary lacks:
    the model would read each as ``<unk>``. Only words within its ``max_len`` count."""
    from mmseg_ovseg.models.language.word_vocab import split_words
    words = split_words(sentence)[:language_encoder.max_len]
    return list(dict.fromkeys(w for w in words if w not in language_encoder.vocab))


def check_sentences(language_encoder, sentences: Union[str, Sequence[str]], count: int,
                    oov: str = 'error') -> List[str]:
    """One sentence per image (one for all is repeated), each checked against the word
    vocabulary of a referring model's ``language_encoder``.

    Args:
        oov (str): words the model does not know: ``'error'`` (a ValueError naming them),
            ``'warn'`` or ``'ignore'``.
    """
    if isinstance(sentences, str):
        sentences = [sentences] * count
    sentences = list(sentences)
    if len(sentences) != count:
        raise ValueError(f'got {len(sentences)} sentences for {count} images (give one '
                         'for all images, or one per image)')
    if oov not in ('error', 'warn', 'ignore'):
        raise ValueError(f"oov must be 'error', 'warn' or 'ignore', got {oov!r}")
    encoder = language_encoder
    for sentence in dict.fromkeys(sentences):
        if not isinstance(sentence, str) or not sentence.strip():
            raise ValueError(f'empty or non-string sentence: {sentence!r}')
        unknown = out_of_vocabulary(encoder, sentence)
        if unknown and oov != 'ignore':
            msg = (f'sentence {sentence!r}: {len(unknown)} word(s) not in the model\'s '
                   f'word vocabulary ({encoder.vocab_file}, {len(encoder.vocab) - 2} '
                   f'words): {", ".join(repr(w) for w in unknown)}; the model would read '
                   'them as <unk>')
            if oov == 'error':
                raise ValueError(msg + ". Rephrase, or pass oov='warn' (--oov warn) to "
                                 'run anyway')
            warnings.warn(msg)
        if len(sentence.split()) > encoder.max_len:
            warnings.warn(f'sentence {sentence!r} has more than {encoder.max_len} words; '
                          'the model reads the first ' + str(encoder.max_len))
    return sentences
