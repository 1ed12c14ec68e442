"""Tiny random Wan2.2 pipelines for tests, saved as ordinary diffusers folders.

They go through `save_pretrained`, then the studio's real loader, exactly as real weights would.
Shapes follow ../shared/WAN22.md; weights are random (seeded), so videos are noise.
"""

from __future__ import annotations

from pathlib import Path

import torch

VOCAB_WORDS = (
    "a red blue green yellow ball cube bird cat dog walks runs flies across the meadow sky "
    "city street night day dusk dawn warm cool colors light camera pan left right push in pull back "
    "close-up wide shot medium lens angle composition style"
).split()


def make_tokenizer():
    """A Unigram T5 tokenizer built from a word list: no files, no network."""
    from transformers import T5TokenizerFast

    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    vocab += [(f"\u2581{w}", -float(i + 1)) for i, w in enumerate(VOCAB_WORDS)]
    vocab += [(c, -100.0) for c in "abcdefghijklmnopqrstuvwxyz,.-"]
    return T5TokenizerFast(vocab=vocab, extra_ids=0)


def make_text_encoder(d_model: int = 32):
    """A two-layer UMT5 encoder."""
    from transformers import UMT5Config, UMT5EncoderModel

    torch.manual_seed(0)
    config = UMT5Config(vocab_size=256, d_model=d_model, d_kv=8, d_ff=64, num_layers=2,
                        num_heads=4, relative_attention_num_buckets=8)
    return UMT5EncoderModel(config).eval()


def make_vae(wan22: bool):
    """A Wan2.1-style (z16) or Wan2.2-style (z48, patch 2) VAE with base_dim 8."""
    from diffusers import AutoencoderKLWan

    torch.manual_seed(0)
    if wan22:
        return AutoencoderKLWan(base_dim=8, z_dim=48, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                                temperal_downsample=[False, True, True], in_channels=12,
                                out_channels=12, is_residual=True, patch_size=2,
                                scale_factor_spatial=16, latents_mean=[0.0] * 48,
                                latents_std=[1.0] * 48).eval()
    return AutoencoderKLWan(base_dim=8, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                            temperal_downsample=[False, True, True]).eval()


def make_transformer(in_channels: int, out_channels: int, seed: int = 0):
    """A two-layer WanTransformer3DModel."""
    from diffusers import WanTransformer3DModel

    torch.manual_seed(seed)
    return WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12,
                                 in_channels=in_channels, out_channels=out_channels, text_dim=32,
                                 freq_dim=32, ffn_dim=32, num_layers=2, rope_max_seq_len=1024).eval()


def make_scheduler(shift: float):
    """UniPC with flow sigmas, as the Wan2.2 Diffusers repos ship."""
    from diffusers import UniPCMultistepScheduler

    return UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                   flow_shift=shift, num_train_timesteps=1000)


def build_tiny_pipeline(variant: str):
    """An in-memory tiny pipeline for `t2v-a14b`, `i2v-a14b` or `ti2v-5b`."""
    from diffusers import WanImageToVideoPipeline, WanPipeline

    common = dict(tokenizer=make_tokenizer(), text_encoder=make_text_encoder())
    if variant == "t2v-a14b":
        return WanPipeline(**common, vae=make_vae(False), scheduler=make_scheduler(12.0),
                           transformer=make_transformer(16, 16, 0),
                           transformer_2=make_transformer(16, 16, 1), boundary_ratio=0.875)
    if variant == "i2v-a14b":
        return WanImageToVideoPipeline(**common, vae=make_vae(False), scheduler=make_scheduler(5.0),
                                       transformer=make_transformer(36, 16, 0),
                                       transformer_2=make_transformer(36, 16, 1),
                                       boundary_ratio=0.9)
    if variant == "ti2v-5b":
        return WanPipeline(**common, vae=make_vae(True), scheduler=make_scheduler(5.0),
                           transformer=make_transformer(48, 48, 0), expand_timesteps=True)
    raise ValueError(f"unknown variant {variant!r}")


def save_tiny_pipeline(variant: str, folder: Path) -> Path:
    """Build and `save_pretrained` a tiny pipeline; returns the folder."""
    folder = Path(folder)
    build_tiny_pipeline(variant).save_pretrained(folder)
    return folder
