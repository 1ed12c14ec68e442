"""Put trained components together as one diffusers pipeline folder with studio.json and a card.

    python -m training.assemble --variant t2v-a14b --vae /tmp/demo/vae_wan21 --text /tmp/demo/text \\
        --transformer /tmp/demo/t2v_high --transformer-2 /tmp/demo/t2v_low --out weights/demo/t2v-a14b
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch
from diffusers import (AutoencoderKLWan, UniPCMultistepScheduler, WanImageToVideoPipeline, WanPipeline,
                       WanTransformer3DModel)
from transformers import AutoTokenizer, UMT5EncoderModel

from pipelines.variants import get_variant

from .captions import knowledge
from .model_card import write_card

DEFAULTS: dict[str, dict[str, Any]] = {
    "t2v-a14b": {"width": 64, "height": 64, "frames": 17, "fps": 8, "steps": 20, "flow_shift": 5.0,
                 "guidance": 4.0, "guidance_low": 3.0},
    "i2v-a14b": {"width": 64, "height": 64, "frames": 17, "fps": 8, "steps": 20, "flow_shift": 5.0,
                 "guidance": 3.5, "guidance_low": 3.5},
    "ti2v-5b": {"width": 64, "height": 64, "frames": 17, "fps": 8, "steps": 20, "flow_shift": 5.0,
                "guidance": 5.0, "guidance_low": None},
}


def build(variant: str, vae: Path, text: Path, transformer: Path, transformer_2: Path | None):
    """The pipeline object for `variant` from component folders."""
    spec = get_variant(variant)
    parts = dict(
        tokenizer=AutoTokenizer.from_pretrained(text / "tokenizer"),
        text_encoder=UMT5EncoderModel.from_pretrained(text / "text_encoder"),
        vae=AutoencoderKLWan.from_pretrained(vae),
        scheduler=UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                          flow_shift=DEFAULTS[variant]["flow_shift"],
                                          num_train_timesteps=1000),
        transformer=WanTransformer3DModel.from_pretrained(transformer),
    )
    if spec.experts == 2:
        if transformer_2 is None:
            raise ValueError(f"{variant} has two experts: pass --transformer-2 (the low-noise one).")
        parts["transformer_2"] = WanTransformer3DModel.from_pretrained(transformer_2)
        parts["boundary_ratio"] = spec.boundary_ratio
    if variant == "i2v-a14b":
        return WanImageToVideoPipeline(**parts)
    return WanPipeline(**parts, expand_timesteps=spec.expand_timesteps)


def assemble(variant: str, vae: Path, text: Path, transformer: Path, transformer_2: Path | None,
             out: Path) -> Path:
    """Save the pipeline in fp16 safetensors, its studio.json and its model card under `out`."""
    pipe = build(variant, vae, text, transformer, transformer_2)
    pipe.to(torch.float16)
    pipe.save_pretrained(out, safe_serialization=True)
    studio = {"demo": True, "variant": variant, "defaults": DEFAULTS[variant], "knows": knowledge()}
    (out / "studio.json").write_text(json.dumps(studio, indent=2) + "\n", encoding="utf-8")
    logs = {}
    for name, folder in (("text", text), ("vae", vae), ("transformer", transformer),
                         ("transformer_2", transformer_2)):
        if folder is not None and (folder / "train_log.txt").is_file():
            logs[name] = (folder / "train_log.txt").read_text().strip()
    (out / "training.json").write_text(json.dumps(logs, indent=2) + "\n", encoding="utf-8")
    write_card(out)
    return out


def main() -> None:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--variant", choices=sorted(DEFAULTS), required=True)
    parser.add_argument("--vae", type=Path, required=True)
    parser.add_argument("--text", type=Path, required=True)
    parser.add_argument("--transformer", type=Path, required=True)
    parser.add_argument("--transformer-2", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    print(assemble(args.variant, args.vae, args.text, args.transformer, args.transformer_2, args.out))


if __name__ == "__main__":
    main()
