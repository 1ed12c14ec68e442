"""The demo tokenizer (the world's vocabulary) and a small UMT5 text encoder, optionally taught
which phrase each word belongs to.

A seeded random encoder is a bag of words: its output for "left" in "pan left" and in "it moves
to the left" has cosine 0.999, so the transformers cannot tell the camera's direction from the
subject's. A short pretraining in which every token predicts its phrase makes the encoder read
context, as a pretrained UMT5 does for the real models.
"""

from __future__ import annotations

import re

import numpy as np
import torch
from transformers import T5TokenizerFast, UMT5Config, UMT5EncoderModel

from . import world
from .captions import MOTION_TEXT, SCENE_TEXT, caption, subject_text, vocabulary_words
from .data import spec_for

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


def phrases() -> list[str]:
    """Every phrase a caption is made of (lower case, without its comma or full stop)."""
    subjects = [subject_text(c, shape) for c in world.COLORS for shape in world.SHAPES]
    return [*subjects, *SCENE_TEXT.values(), *MOTION_TEXT.values(), *world.LIGHTS, *world.TIMES,
            *world.SHOTS, *world.COMPOSITIONS, *world.CAMERAS, *(t for t in world.TONES if t != "neutral")]


def phrase_batch(tokenizer: T5TokenizerFast, captions: list[str]) -> tuple[torch.Tensor, ...]:
    """Token ids, attention mask and each token's phrase index (-100 for </s> and padding)."""
    index = {p: i for i, p in enumerate(phrases())}
    rows = []
    for text in captions:
        ids, labels = [], []
        for part in re.split(r"(?<=[,.]) ", text):
            piece = tokenizer(part, add_special_tokens=False).input_ids
            ids += piece
            labels += [index[part.strip(" ,.").lower()]] * len(piece)
        rows.append((ids + [tokenizer.eos_token_id], labels + [-100]))
    length = max(len(ids) for ids, _ in rows)
    ids = torch.zeros(len(rows), length, dtype=torch.long)
    labels = torch.full((len(rows), length), -100)
    for i, (row_ids, row_labels) in enumerate(rows):
        ids[i, :len(row_ids)] = torch.tensor(row_ids)
        labels[i, :len(row_labels)] = torch.tensor(row_labels)
    return ids, (ids != 0).long(), labels


def teach_phrases(encoder: UMT5EncoderModel, tokenizer: T5TokenizerFast, steps: int, seed: int = 0,
                  batch: int = 64, lr: float = 2e-3) -> float:
    """Train the encoder so that every token's output names its phrase (a linear probe reads it);
    captions are drawn as the transformers see them. Returns the last batch's token accuracy."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    words = vocabulary_words()
    upper = torch.tensor([tokenizer.convert_tokens_to_ids(f"\u2581{_capitalised(w)}") for w in words])
    lower = torch.tensor([tokenizer.convert_tokens_to_ids(f"\u2581{w}") for w in words])
    lowered = torch.arange(len(tokenizer))
    lowered[upper] = lower  # capitals train their lower-case row and are tied again at the end
    probe = torch.nn.Linear(encoder.config.d_model, len(phrases()))
    opt = torch.optim.AdamW([*encoder.parameters(), *probe.parameters()], lr=lr)
    encoder.train()
    accuracy = 0.0
    for _ in range(steps):
        texts = [caption(spec_for(int(rng.integers(0, 1_000_000))), rng, keep=0.85,
                         image_mode=bool(rng.random() < 0.5)) for _ in range(batch)]
        ids, mask, labels = phrase_batch(tokenizer, texts)
        logits = probe(encoder(input_ids=lowered[ids], attention_mask=mask).last_hidden_state)
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        known = labels != -100
        accuracy = float((logits.argmax(-1) == labels)[known].float().mean())
    encoder.eval()
    with torch.no_grad():
        table = encoder.get_input_embeddings().weight
        table[upper] = table[lower]
    return accuracy
