"""LoRA files for the tiny experts of tiny_models.py, written in each key format users bring.

One set of LoRA matrices (seeded) is written as diffusers/PEFT keys, as the original Wan /
ComfyUI keys (`diffusion_model.*`, `lora_down`/`lora_up`, `alpha`, optional `diff_b`) and as
musubi keys (`lora_unet_*`). With alpha equal to the rank, every format means the same weights.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

DIM, FFN, LAYERS, RANK = 24, 32, 2, 4  # tiny_models.make_transformer: 2 heads x 12, ffn 32, 2 blocks

# (diffusers module, original Wan module, musubi module, in features, out features)
LAYOUT = [
    *[(f"attn1.{d}", f"self_attn.{o}", f"self_attn_{o}", DIM, DIM)
      for d, o in (("to_q", "q"), ("to_k", "k"), ("to_v", "v"), ("to_out.0", "o"))],
    *[(f"attn2.{d}", f"cross_attn.{o}", f"cross_attn_{o}", DIM, DIM)
      for d, o in (("to_q", "q"), ("to_k", "k"), ("to_v", "v"), ("to_out.0", "o"))],
    ("ffn.net.0.proj", "ffn.0", "ffn_0", DIM, FFN),
    ("ffn.net.2", "ffn.2", "ffn_2", FFN, DIM),
]


def matrices(seed: int, scale: float = 0.6, dim: int = DIM, ffn: int = FFN,
             layers: int = LAYERS) -> dict[tuple[int, str], tuple[torch.Tensor, torch.Tensor]]:
    """{(block, diffusers module): (down [rank, in], up [out, rank])} for every LoRA layer."""
    generator = torch.Generator().manual_seed(seed)
    out = {}
    for block in range(layers):
        for module, _, _, fan_in, fan_out in LAYOUT:
            fan_in = {DIM: dim, FFN: ffn}[fan_in]
            fan_out = {DIM: dim, FFN: ffn}[fan_out]
            down = torch.randn(RANK, fan_in, generator=generator) * scale
            up = torch.randn(fan_out, RANK, generator=generator) * scale
            out[(block, module)] = (down, up)
    return out


def write_diffusers(path: Path, seed: int, **shape: int) -> Path:
    """diffusers / PEFT keys: transformer.blocks.N.attn1.to_q.lora_A.weight."""
    tensors = {}
    for (block, module), (down, up) in matrices(seed, **shape).items():
        tensors[f"transformer.blocks.{block}.{module}.lora_A.weight"] = down
        tensors[f"transformer.blocks.{block}.{module}.lora_B.weight"] = up
    save_file(tensors, str(path))
    return path


def write_wan(path: Path, seed: int, alpha: float = RANK, diff_b: str = "none") -> Path:
    """Original Wan / ComfyUI keys with alpha; diff_b on "none", "attention" or "all" layers."""
    names = {module: wan for module, wan, _, _, _ in LAYOUT}
    tensors = {}
    for (block, module), (down, up) in matrices(seed).items():
        key = f"diffusion_model.blocks.{block}.{names[module]}"
        tensors[f"{key}.lora_down.weight"] = down
        tensors[f"{key}.lora_up.weight"] = up
        tensors[f"{key}.alpha"] = torch.tensor(float(alpha))
        if diff_b == "all" or (diff_b == "attention" and "attn" in module):
            tensors[f"{key}.diff_b"] = torch.full((up.shape[0],), 0.05)
    save_file(tensors, str(path))
    return path


def write_musubi(path: Path, seed: int, alpha: float = RANK) -> Path:
    """musubi-tuner keys: lora_unet_blocks_N_self_attn_q.lora_down.weight, with alpha."""
    names = {module: musubi for module, _, musubi, _, _ in LAYOUT}
    tensors = {}
    for (block, module), (down, up) in matrices(seed).items():
        key = f"lora_unet_blocks_{block}_{names[module]}"
        tensors[f"{key}.lora_down.weight"] = down
        tensors[f"{key}.lora_up.weight"] = up
        tensors[f"{key}.alpha"] = torch.tensor(float(alpha))
    save_file(tensors, str(path))
    return path


def write_other_architecture(path: Path) -> Path:
    """A LoRA for another model family (Flux-style names): no layer exists in a Wan transformer."""
    tensors = {}
    for block in range(2):
        tensors[f"transformer.single_transformer_blocks.{block}.attn.to_q.lora_A.weight"] = torch.randn(RANK, DIM)
        tensors[f"transformer.single_transformer_blocks.{block}.attn.to_q.lora_B.weight"] = torch.randn(DIM, RANK)
    save_file(tensors, str(path))
    return path


def write_partial(path: Path, seed: int) -> Path:
    """A Wan LoRA for a deeper model: blocks 0-1 fit, blocks 2-3 do not exist here."""
    tensors = {}
    for (block, module), (down, up) in matrices(seed, layers=4).items():
        tensors[f"transformer.blocks.{block}.{module}.lora_A.weight"] = down
        tensors[f"transformer.blocks.{block}.{module}.lora_B.weight"] = up
    save_file(tensors, str(path))
    return path
