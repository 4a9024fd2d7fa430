"""Word vocabulary, REFER-style tokenisation and GloVe-format vectors for ReSTR's language
encoder (Kim et al., CVPR 2022, Sec. 3.1: "a sentence of T words, each embedded by GloVe").

Vocabulary file: plain UTF-8 text, one word per line, no reserved tokens in it. Ids::

    0 = PAD_TOKEN '<pad>'   (padding; the embedding row is zero and masked in attention)
    1 = UNK_TOKEN '<unk>'   (any word not in the file)
    2 + line index          (the file's words, in file order)

Tokenisation follows the ``refer`` toolkit / official ReSTR text processing: split on runs of
non-word characters (kept as tokens when not blank, e.g. ``"man's"`` -> ``man ' s``),
lower-case, drop a final ``'.'``.
"""
import os.path as osp
import re
from collections import Counter
from typing import Iterable, List, Optional, Sequence, Tuple

import torch

from ...utils.safe_pickle import load_plain_pickle

PAD_TOKEN = '<pad>'
UNK_TOKEN = '<unk>'
PAD_ID = 0
UNK_ID = 1
_SPLIT = re.compile(r'(\W+)')


def split_words(sentence: str) -> List[str]:
    """REFER-style word list of a sentence (lower-cased, final ``'.'`` dropped)."""
    if not isinstance(sentence, str):
        raise TypeError(f'split_words: expected a str sentence, got {type(sentence).__name__}')
    words = [w.strip().lower() for w in _SPLIT.split(sentence.strip()) if w.strip()]
    if words and words[-1] == '.':
        words = words[:-1]
    return words


class WordVocabulary:
    """Word -> id map with ``<pad>`` = 0 and ``<unk>`` = 1 (see the module docstring).

    Args:
        words (sequence of str): the vocabulary words (no duplicates, no whitespace, not the
            reserved tokens).
        source (str): where the words come from, for error messages.

    Raises:
        ValueError: an empty vocabulary, a duplicate, blank or whitespace-containing word,
            or a reserved token among the words (the message names the source and line).
    """

    def __init__(self, words: Sequence[str], source: str = '<list>'):
        self.source = source
        words = list(words)
        if not words:
            raise ValueError(f'WordVocabulary: {source} has no words (an empty vocabulary)')
        index = {}
        for i, w in enumerate(words):
            where = f'{source} line {i + 1}'
            if not isinstance(w, str) or not w:
                raise ValueError(f'WordVocabulary: {where}: empty word')
            if any(c.isspace() for c in w):
                raise ValueError(f'WordVocabulary: {where}: word {w!r} contains whitespace')
            if w in (PAD_TOKEN, UNK_TOKEN):
                raise ValueError(f'WordVocabulary: {where}: {w!r} is reserved (ids 0 and 1 '
                                 'are added automatically)')
            if w in index:
                raise ValueError(f'WordVocabulary: {where}: duplicate word {w!r} (first at '
                                 f'line {index[w] - 1})')
            index[w] = i + 2
        self.words = words
        self._index = index

    @classmethod
    def from_file(cls, path: str) -> 'WordVocabulary':
        """Read a vocabulary file (one word per line; blank lines are errors)."""
        if not osp.isfile(path):
            raise FileNotFoundError(
                f'WordVocabulary: vocabulary file {path} not found; build it with '
                'tools/dataset_converters/build_word_vocab.py from a refs pickle')
        with open(path, encoding='utf-8') as f:
            lines = f.read().splitlines()
        while lines and not lines[-1].strip():  # tolerate trailing blank lines only
            lines.pop()
        return cls([ln.strip() for ln in lines], source=path)

    def save(self, path: str) -> None:
        with open(path, 'w', encoding='utf-8') as f:
            f.write('\n'.join(self.words) + '\n')

    def __len__(self) -> int:
        """Number of ids, including ``<pad>`` and ``<unk>``."""
        return len(self.words) + 2

    def __contains__(self, word: str) -> bool:
        return word in self._index

    def word_to_id(self, word: str) -> int:
        return self._index.get(word, UNK_ID)

    def id_to_word(self, idx: int) -> str:
        if idx == PAD_ID:
            return PAD_TOKEN
        if idx == UNK_ID:
            return UNK_TOKEN
        return self.words[idx - 2]

    def encode(self, sentences: Sequence[str], max_len: int = 20,
               device=None) -> Tuple[torch.Tensor, torch.Tensor]:
        """Token ids and validity mask of a batch of sentences.

        Words are truncated to ``max_len`` and padded at the end with ``<pad>``. A sentence
        without any word (e.g. ``'.'``) becomes one ``<unk>`` so no row is fully masked.

        Returns:
            tuple: ``ids`` LongTensor ``(B, max_len)`` and ``mask`` BoolTensor ``(B, max_len)``,
            True at real words.
        """
        if max_len < 1:
            raise ValueError(f'WordVocabulary.encode: max_len must be >= 1, got {max_len}')
        ids = torch.full((len(sentences), max_len), PAD_ID, dtype=torch.long)
        for b, s in enumerate(sentences):
            toks = [self.word_to_id(w) for w in split_words(s)][:max_len] or [UNK_ID]
            ids[b, :len(toks)] = torch.tensor(toks, dtype=torch.long)
        ids = ids.to(device) if device is not None else ids
        return ids, ids != PAD_ID


def count_ref_words(refs_files: Iterable[str], splits: Optional[Sequence[str]] = None,
                    field: str = 'sent') -> Counter:
    """Word counts over the sentences of REFER refs pickles (loaded with the restricted
    unpickler), tokenised with :func:`split_words`; ``splits`` restricts the refs used
    (e.g. ``['train']``)."""
    counts: Counter = Counter()
    for path in refs_files:
        if not osp.isfile(path):
            raise FileNotFoundError(f'count_ref_words: refs pickle {path} not found')
        refs = load_plain_pickle(path)
        if not isinstance(refs, list):
            raise ValueError(f'{path}: expected a list of ref dicts')
        for ref in refs:
            if splits is not None and ref.get('split') not in splits:
                continue
            for sent in ref.get('sentences', []):
                if field not in sent:
                    raise ValueError(f'{path}: ref {ref.get("ref_id")} sentence '
                                     f'{sent.get("sent_id")} has no {field!r}')
                counts.update(split_words(sent[field]))
    return counts


def build_vocab_from_refs(refs_files: Sequence[str], out_file: Optional[str] = None,
                          min_count: int = 1, splits: Optional[Sequence[str]] = None,
                          field: str = 'sent') -> WordVocabulary:
    """Vocabulary of the words occurring at least ``min_count`` times in the refs files,
    most frequent first (ties alphabetical); written to ``out_file`` if given."""
    if isinstance(refs_files, str):
        refs_files = [refs_files]
    counts = count_ref_words(refs_files, splits=splits, field=field)
    words = sorted((w for w, c in counts.items()
                    if c >= min_count and w not in (PAD_TOKEN, UNK_TOKEN)),
                   key=lambda w: (-counts[w], w))
    vocab = WordVocabulary(words, source=', '.join(refs_files))
    if out_file is not None:
        vocab.save(out_file)
    return vocab


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def load_glove_vectors(path: str, vocab: WordVocabulary, dim: int,
                       weight: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, int]:
    """Copy GloVe-format text vectors (``word v1 ... v_dim`` per line) into an embedding.

    Args:
        path (str): the text file.
        vocab (WordVocabulary): ids of the rows to fill.
        dim (int): vector size (300 for GloVe 840B/6B-300d).
        weight (Tensor, optional): ``(len(vocab), dim)`` initial rows (kept for words the file
            lacks); default zeros.

    Returns:
        tuple: the ``(len(vocab), dim)`` weight (row 0, ``<pad>``, zero) and the number of
        vocabulary words found in the file.

    A word2vec-style header line (``<count> <dim>``) and entries whose word contains spaces
    (a few in ``glove.840B.300d.txt``; no vocabulary word has one) are skipped.

    Raises:
        FileNotFoundError / ValueError: missing file, or a line whose vector is not ``dim``
        numbers (the message names the file and line).
    """
    if not osp.isfile(path):
        raise FileNotFoundError(f'load_glove_vectors: {path} not found')
    if weight is None:
        weight = torch.zeros(len(vocab), dim)
    elif tuple(weight.shape) != (len(vocab), dim):
        raise ValueError(f'load_glove_vectors: weight is {tuple(weight.shape)}, expected '
                         f'{(len(vocab), dim)}')
    weight = weight.detach().clone()
    found = 0
    with open(path, encoding='utf-8') as f:
        for n, line in enumerate(f, 1):
            parts = line.rstrip('\n').rstrip().split(' ')
            if len(parts) <= 1:
                continue
            if n == 1 and len(parts) == 2 and all(p.isdigit() for p in parts):
                continue  # word2vec-style header "<count> <dim>"
            word, values = parts[0], parts[1:]
            if len(values) > dim and not _is_number(values[0]) and \
                    all(_is_number(v) for v in values[-dim:]):
                continue  # a "word" containing spaces (glove.840B has a few): never in vocab
            if len(values) != dim:
                raise ValueError(f'load_glove_vectors: {path} line {n} ({word!r}) has '
                                 f'{len(values)} values, expected {dim}')
            if word not in vocab:
                continue
            try:
                vec = torch.tensor([float(v) for v in values])
            except ValueError as e:
                raise ValueError(f'load_glove_vectors: {path} line {n} ({word!r}): {e}') from e
            weight[vocab.word_to_id(word)] = vec
            found += 1
    weight[PAD_ID] = 0
    return weight, found
