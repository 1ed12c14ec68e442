"""Build the demo tokenizer and text encoder and save them as diffusers pipeline components.

    python -m training.train_text --out /tmp/demo/text

The encoder is not trained: a seeded random UMT5 already maps each caption word to a distinct
vector, and the transformers learn what the words mean through cross-attention (training the
encoder jointly bought nothing measurable in the time available).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .text import build_text_encoder, build_tokenizer


def main() -> None:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    tokenizer = build_tokenizer()
    encoder = build_text_encoder(tokenizer, args.seed)
    tokenizer.save_pretrained(args.out / "tokenizer")
    encoder.save_pretrained(args.out / "text_encoder")
    print(f"tokenizer ({len(tokenizer)} pieces) and text encoder saved under {args.out}")


if __name__ == "__main__":
    main()
