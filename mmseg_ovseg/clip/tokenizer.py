"""CLIP byte-pair-encoding tokenizer (open_clip's, which ships its vocabulary offline)."""
from typing import Sequence, Union

import torch
from open_clip.tokenizer import SimpleTokenizer

_TOKENIZER = None


def _get_tokenizer() -> SimpleTokenizer:
    # Building the BPE merge table takes ~0.2 s; do it once per process.
    global _TOKENIZER
    if _TOKENIZER is None:
        _TOKENIZER = SimpleTokenizer()
    return _TOKENIZER


def sot_token_id() -> int:
    """Id of the start-of-text token (49406 for CLIP's vocabulary)."""
    return _get_tokenizer().sot_token_id


def eot_token_id() -> int:
    """Id of the end-of-text token (49407, the largest id: CLIP pools at ``argmax``)."""
    return _get_tokenizer().eot_token_id


def encode(text: str) -> list:
    """BPE ids of ``text`` without start/end tokens (lower-cased, whitespace-cleaned)."""
    if not isinstance(text, str):
        raise TypeError(f'tokenizer: expected a string, got {type(text).__name__}: {text!r}')
    return _get_tokenizer().encode(text)


def tokenize(texts: Union[str, Sequence[str]], context_length: int = 77) -> torch.LongTensor:
    """Tokenize texts for the CLIP text tower.

    Each row is ``[SOT, bpe ids..., EOT, 0...]``. A text longer than ``context_length`` is
    truncated and its last kept position is set to EOT, so the tower always pools at a real
    end token.

    Args:
        texts: one string or a sequence of strings.
        context_length: number of token positions per row (77 for every CLIP model).

    Returns:
        LongTensor (N, context_length).
    """
    if isinstance(texts, str):
        texts = [texts]
    if context_length < 2:
        raise ValueError(f'tokenize: context_length must be >= 2 (SOT and EOT), '
                         f'got {context_length}')
    sot, eot = sot_token_id(), eot_token_id()
    result = torch.zeros(len(texts), context_length, dtype=torch.long)
    for i, text in enumerate(texts):
        ids = [sot] + encode(text) + [eot]
        if len(ids) > context_length:
            ids = ids[:context_length - 1] + [eot]
        result[i, :len(ids)] = torch.tensor(ids)
    return result
