from .restr_language_encoder import ReSTRLanguageEncoder  # noqa: F401
from .word_vocab import (  # noqa: F401
    PAD_ID,
    PAD_TOKEN,
    UNK_ID,
    UNK_TOKEN,
    WordVocabulary,
    build_vocab_from_refs,
    count_ref_words,
    load_glove_vectors,
    split_words,
)
