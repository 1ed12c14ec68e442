"""The demo tokenizer (the world's vocabulary) and a small UMT5 text encoder."""

from __future__ import annotations

import torch
from transformers import T5TokenizerFast, UMT5Config, UMT5EncoderModel

from .captions import vocabulary_words

TEXT_DIM = 64


def build_tokenizer() -> T5TokenizerFast:
    """A Unigram T5 tokenizer whose pieces are the caption words (plus letters as a fallback)."""
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    vocab += [(f"\u2581{w}", -1.0) for w in vocabulary_words()]
    vocab += [(c, -50.0) for c in "abcdefghijklmnopqrstuvwxyz0123456789,.-'\u2581"]
    return T5TokenizerFast(vocab=vocab, extra_ids=0)


def build_text_encoder(vocab_size: int, seed: int = 0) -> UMT5EncoderModel:
    """A two-layer UMT5 encoder with seeded random weights, kept frozen."""
    torch.manual_seed(seed)
    config = UMT5Config(vocab_size=vocab_size, d_model=TEXT_DIM, d_kv=16, d_ff=128, num_layers=2,
                        num_heads=4, relative_attention_num_buckets=8, dropout_rate=0.0)
    return UMT5EncoderModel(config).eval()
