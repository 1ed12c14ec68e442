"""The demo tokenizer (the world's vocabulary) and a small UMT5 text encoder."""

from __future__ import annotations

import torch
from transformers import T5TokenizerFast, UMT5Config, UMT5EncoderModel

from .captions import vocabulary_words

TEXT_DIM = 64
CHARACTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789,.-'()!?\u2581"


def _capitalised(word: str) -> str:
    return word[:1].upper() + word[1:]


def build_tokenizer() -> T5TokenizerFast:
    """A Unigram T5 tokenizer whose pieces are the caption words, each also capitalised (the
    composer starts the control sentence with a capital), plus characters as a fallback."""
    words = vocabulary_words()
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    vocab += [(f"\u2581{w}", -1.0) for w in words]
    vocab += [(f"\u2581{_capitalised(w)}", -1.0) for w in words if _capitalised(w) != w]
    vocab += [(c, -50.0) for c in CHARACTERS]
    return T5TokenizerFast(vocab=vocab, extra_ids=0)


def build_text_encoder(tokenizer: T5TokenizerFast, seed: int = 0) -> UMT5EncoderModel:
    """A two-layer UMT5 encoder with seeded random weights, kept frozen; a capitalised word
    shares its lower-case word's embedding, so "Pan left" and "pan left" encode alike."""
    torch.manual_seed(seed)
    config = UMT5Config(vocab_size=len(tokenizer), d_model=TEXT_DIM, d_kv=16, d_ff=128, num_layers=2,
                        num_heads=4, relative_attention_num_buckets=8, dropout_rate=0.0)
    model = UMT5EncoderModel(config).eval()
    table = model.get_input_embeddings().weight
    with torch.no_grad():
        for word in vocabulary_words():
            upper, lower = (tokenizer.convert_tokens_to_ids(f"\u2581{w}")
                            for w in (_capitalised(word), word))
            table[upper] = table[lower]
    return model
