from .restr_language_encoder import ReSTRLanguageEncoder  # noqa: F401
from .word_vocab import (PAD_ID, PAD_TOKEN, UNK_ID, UNK_TOKEN, WordVocabulary,  # noqa: F401
                         build_vocab_from_refs, count_ref_words, load_glove_vectors,
                         split_words)
