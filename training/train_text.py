"""Build the demo tokenizer and text encoder and save them as diffusers pipeline components.

    python -m training.train_text --out /tmp/demo/text [--phrase-steps 600]

The encoder starts as a seeded random UMT5 and is taught which phrase each token belongs to
(training/text.py: a random encoder is a bag of words, "left" reads the same in "pan left" and in
"it moves to the left"); the transformers then learn what the phrases mean through cross-attention.
train_all.sh teaches it 600 steps. On the random encoder (--phrase-steps 0), with the recipes otherwise
as shipped, TI2V read pan 10/32 and I2V subject motion 20/32; on the taught one 28 and 29
(docs/benchmarks.md). Writes train_log.txt beside the encoder; training.assemble copies it into
each folder's training.json.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from .text import build_text_encoder, build_tokenizer, teach_phrases


def argument_parser() -> argparse.ArgumentParser:
    """The command line of training.train_text."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--phrase-steps", type=int, default=600, help="0 keeps the random encoder")
    return parser


def main() -> None:
    """Command line entry point."""
    args = argument_parser().parse_args()
    torch.set_num_threads(1)
    tokenizer = build_tokenizer()
    encoder = build_text_encoder(tokenizer, args.seed)
    log = f"phrase_steps={args.phrase_steps} seed={args.seed}"
    if args.phrase_steps:
        accuracy = teach_phrases(encoder, tokenizer, args.phrase_steps, args.seed)
        print(f"phrase tagging: {args.phrase_steps} steps, token accuracy {accuracy:.3f}")
        log += f" token_accuracy={accuracy:.3f}"
    tokenizer.save_pretrained(args.out / "tokenizer")
    encoder.save_pretrained(args.out / "text_encoder")
    (args.out / "train_log.txt").write_text(log + "\n")
    print(f"tokenizer ({len(tokenizer)} pieces) and text encoder saved under {args.out}")


if __name__ == "__main__":
    main()
