"""ReSTR's language encoder (Kim et al., CVPR 2022, Sec. 3.1, "Transformer encoders for
feature extraction"): word embeddings (GloVe, fine-tuned), 1-D sinusoidal positions, a
post-norm transformer encoder, then ``Linear(300 -> 768) + LayerNorm`` to the fusion width.
"""
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from mmengine.model import BaseModule
from mmseg.registry import MODELS
from torch import Tensor

from ..layers import (
    MaskedTransformerBlock,
    padding_bias,
    sinusoidal_positions,
    trunc_normal_init_weights,
)
from .word_vocab import PAD_ID, WordVocabulary, load_glove_vectors


@MODELS.register_module()
class ReSTRLanguageEncoder(BaseModule):
    """Sentence -> word features ``(B, T, out_dims)`` with a validity mask ``(B, T)``.

    Padded words (id 0, zero embedding) are masked out of every attention (the official code
    attends to them); their output rows are zeroed.

    Args:
        vocab_file (str): the word vocabulary (:class:`WordVocabulary` file format).
        embed_dims (int): word-embedding width (GloVe: 300).
        out_dims (int): output width (the ViT's: 768).
        num_layers (int): post-norm transformer blocks (official: 6).
        num_heads (int): attention heads (official: the ViT's 12; 300 / 12 = 25 per head).
        ffn_ratio (int): FFN hidden width = ``ffn_ratio * embed_dims`` (official: 4).
        max_len (int): ``T``, words per sentence after truncation/padding (official: 20).
        drop_path_rate (float): stochastic depth, linear over blocks (official: 0).
        glove_file (str, optional): GloVe-format text vectors (``word v1 ... v_embed_dims``)
            copied into the embedding at construction; words absent from it keep the random
            init. Default None (random init).
        freeze_embedding (bool): keep the word embedding fixed (official: fine-tuned).
    """

    def __init__(self,
                 vocab_file: str,
                 embed_dims: int = 300,
                 out_dims: int = 768,
                 num_layers: int = 6,
                 num_heads: int = 12,
                 ffn_ratio: int = 4,
                 max_len: int = 20,
                 drop_path_rate: float = 0.0,
                 glove_file: Optional[str] = None,
                 freeze_embedding: bool = False,
                 init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        self.vocab = WordVocabulary.from_file(vocab_file)
        self.vocab_file = vocab_file
        self.max_len = max_len
        self.embed_dims = embed_dims
        self.out_dims = out_dims
        self.embedding = nn.Embedding(len(self.vocab), embed_dims, padding_idx=PAD_ID)
        self.register_buffer('pos_embed', sinusoidal_positions(max_len, embed_dims),
                             persistent=False)
        dpr = torch.linspace(0, drop_path_rate, num_layers).tolist() if num_layers else []
        self.blocks = nn.ModuleList([
            MaskedTransformerBlock(embed_dims, num_heads, ffn_ratio * embed_dims, dpr[i],
                                   pre_norm=False) for i in range(num_layers)
        ])
        self.proj = nn.Linear(embed_dims, out_dims)
        self.norm = nn.LayerNorm(out_dims)
        trunc_normal_init_weights(self)
        self.glove_file = glove_file
        self.glove_found = None
        if glove_file is not None:
            weight, self.glove_found = load_glove_vectors(
                glove_file, self.vocab, embed_dims, self.embedding.weight)
            self.embedding.weight.data.copy_(weight)
        with torch.no_grad():
            self.embedding.weight[PAD_ID].zero_()
        self.embedding.weight.requires_grad_(not freeze_embedding)

    def tokenize(self, sentences: Sequence[str],
                 device=None) -> Tuple[Tensor, Tensor]:
        """``ids (B, T)`` long and ``valid (B, T)`` bool (see :meth:`WordVocabulary.encode`)."""
        return self.vocab.encode(sentences, self.max_len, device=device)

    def forward_ids(self, ids: Tensor, valid: Tensor) -> Tensor:
        """``ids (B, T)``, ``valid (B, T)`` -> word features ``(B, T, out_dims)`` (zero at
        padded words)."""
        if ids.dim() != 2 or ids.shape[1] != self.max_len or valid.shape != ids.shape:
            raise ValueError(f'ReSTRLanguageEncoder: ids and valid must both be (B, '
                             f'{self.max_len}), got {tuple(ids.shape)} and '
                             f'{tuple(valid.shape)}')
        x = self.embedding(ids) + self.pos_embed.to(self.embedding.weight.dtype)
        bias = padding_bias(valid, x.dtype)  # once for all blocks
        for blk in self.blocks:
            x = blk(x, bias=bias)
        x = self.norm(self.proj(x))
        return x * valid[..., None].to(x.dtype)

    def forward(self, sentences: List[str]) -> Tuple[Tensor, Tensor]:
        """Sentences (B strings) -> ``(features (B, T, out_dims), valid (B, T))``."""
        ids, valid = self.tokenize(sentences, device=self.embedding.weight.device)
        return self.forward_ids(ids, valid), valid
