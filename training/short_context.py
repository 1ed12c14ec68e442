"""Train on short prompt contexts that behave exactly like the pipelines' 512-token padding.

The Wan pipelines zero-pad every prompt embedding to 512 rows. All padding rows give the same
key and value in cross-attention, so n of them act like one of them with its attention logit
raised by log(n). Training with a few padding rows plus that per-prompt bias gives the same
outputs (and gradients) as 512 rows, at a fraction of the cost; inference is unchanged.
"""

from __future__ import annotations

import contextlib
import math
from typing import Iterator

import torch
from diffusers import WanTransformer3DModel
from diffusers.models.transformers.transformer_wan import WanAttnProcessor


class _PaddedCrossAttnProcessor(WanAttnProcessor):
    """WanAttnProcessor with an additive mask on cross-attention, taken from `self.bias`."""

    def __init__(self) -> None:
        super().__init__()
        self.bias: torch.Tensor | None = None

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None,
                 rotary_emb=None):
        if encoder_hidden_states is not None and self.bias is not None:
            attention_mask = self.bias.to(hidden_states.dtype)
        return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, rotary_emb)


def short_context(embeds: list[torch.Tensor], full_length: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """Pack prompt embeddings (one (L_i, D) tensor each) into (B, L_max + 1, D) plus the bias
    (B, 1, 1, L_max + 1) that makes the padding count as `full_length - L_i` rows."""
    longest = max(len(e) for e in embeds)
    if longest >= full_length:
        raise ValueError(f"Prompts must be shorter than {full_length} tokens, got {longest}.")
    width = longest + 1
    out = torch.zeros(len(embeds), width, embeds[0].shape[-1])
    bias = torch.zeros(len(embeds), 1, 1, width)
    for i, e in enumerate(embeds):
        out[i, : len(e)] = e
        bias[i, ..., len(e):] = math.log((full_length - len(e)) / (width - len(e)))
    return out, bias


@contextlib.contextmanager
def padded_cross_attention(model: WanTransformer3DModel, bias: torch.Tensor) -> Iterator[None]:
    """Within the block, cross-attention of `model` uses `bias` (from `short_context`)."""
    processors = []
    for block in model.blocks:
        proc = block.attn2.processor
        if not isinstance(proc, _PaddedCrossAttnProcessor):
            proc = _PaddedCrossAttnProcessor()
            block.attn2.set_processor(proc)
        proc.bias = bias
        processors.append(proc)
    try:
        yield
    finally:
        for proc in processors:
            proc.bias = None
