"""Flow-matching training of a small WanTransformer3DModel on cached world latents, as Wan trains:
x_t = (1 - sigma) x0 + sigma noise, the model predicts noise - x0 at timestep sigma * 1000.

One function serves the three variants: `t2v` (16 channels in), `i2v` (16 noise + 4 mask + 16
image-latent channels in, as WanImageToVideoPipeline builds them) and `ti2v` (48 channels,
`expand_timesteps`: half the batches keep the clean first latent frame at timestep 0, as the
image-to-video path of the same folder runs it). A14B experts train on one side of the boundary.
With a subject weight w, the loss on each latent cell is weighted 1 + w * (share of the cell the
subject covers): the subject is a tenth of the latent, and without it the high-noise expert
learns the background's layout and leaves the subject out.
Levers not used by train_all.sh (docs/benchmarks.md has what each did): --camera-weight draws chosen
camera moves more often; --motion-weight adds a loss on the change between latent frames (TI2V on the
taught text encoder: text pan 28 -> 30/32, subject motion from an image 27 -> 26);
--image-subject-weight gives the items conditioned on an image their own subject weight.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch
from diffusers import WanPipeline, WanTransformer3DModel

from pipelines.request import DEFAULT_NEGATIVE_PROMPT

from .captions import caption
from .data import spec_for
from .short_context import padded_cross_attention, short_context
from .text import TEXT_DIM
from .world import CAMERAS

MAX_SEQUENCE_LENGTH = 512  # what the Wan pipelines pad prompts to (emulated exactly in training)
TRANSFORMER = dict(patch_size=(1, 2, 2), num_attention_heads=4, attention_head_dim=32,
                   text_dim=TEXT_DIM, freq_dim=64, ffn_dim=512, num_layers=4, rope_max_seq_len=1024)
CHANNELS = {"t2v": (16, 16), "i2v": (36, 16), "ti2v": (48, 48)}


class PromptEncoder:
    """Prompt embeddings exactly as the Wan pipelines make them (without the zero padding), cached."""

    def __init__(self, text_dir: Path) -> None:
        from transformers import AutoTokenizer, UMT5EncoderModel

        self.pipe = WanPipeline(tokenizer=AutoTokenizer.from_pretrained(text_dir / "tokenizer"),
                                text_encoder=UMT5EncoderModel.from_pretrained(text_dir / "text_encoder"),
                                vae=None, scheduler=None, transformer=None)
        self.cache: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def __call__(self, prompts: list[str]) -> list[torch.Tensor]:
        missing = [p for p in dict.fromkeys(prompts) if p not in self.cache]
        if missing:
            # real tokens never attend to padding, so encoding at the longest prompt's length gives
            # the rows a 512-token encoding gives, at a fraction of the cost
            longest = max(len(ids) for ids in self.pipe.tokenizer(missing).input_ids)
            length = min(longest, MAX_SEQUENCE_LENGTH)
            embeds = self.pipe._get_t5_prompt_embeds(missing, max_sequence_length=length,
                                                     device=torch.device("cpu"))
            for p, e in zip(missing, embeds):
                rows = int(e.abs().sum(-1).gt(0).sum())  # the pipeline zero-pads after the prompt
                self.cache[p] = e[:rows].clone()
        return [self.cache[p] for p in prompts]


def sigma_range(expert: str, boundary: float | None, shift: float) -> tuple[float, float]:
    """Range of the uniform variable u (sigma = shift u / (1 + (shift - 1) u)) for an expert."""
    if expert == "all":
        return 0.0, 1.0
    if boundary is None:
        raise ValueError("A high- or low-noise expert needs a boundary ratio.")
    u_boundary = boundary / (shift - (shift - 1) * boundary)
    return (u_boundary, 1.0) if expert == "high" else (0.0, u_boundary)


def sampling_weights(indices: list[int], camera_weight: dict[str, float]) -> np.ndarray:
    """Probability of drawing each clip when clips with some camera moves are drawn more often."""
    unknown = set(camera_weight) - set(CAMERAS)
    if unknown:
        raise ValueError(f"Unknown camera move(s) {sorted(unknown)}; choose from {', '.join(CAMERAS)}.")
    weights = np.array([camera_weight.get(spec_for(i).camera, 1.0) for i in indices], dtype=np.float64)
    if (weights < 0).any() or weights.sum() <= 0:
        raise ValueError("Camera weights must be non-negative and leave some clips to draw.")
    return weights / weights.sum()


def temporal_difference_loss(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Squared error of the change from one latent frame to the next: the plain loss spends little on
    motion, which is a small part of a clip's energy, and the models learned to hold frames still."""
    diff = lambda x: x[:, :, 1:] - x[:, :, :-1]  # noqa: E731
    w = torch.minimum(weight[:, :, 1:], weight[:, :, :-1])  # a frame held clean (ti2v) has no error
    return ((diff(pred) - diff(target)).pow(2) * w).sum() / w.sum().clamp_min(1e-6)


def subject_loss_weight(cover: torch.Tensor, with_image: np.ndarray, subject_weight: float,
                        image_subject_weight: float) -> torch.Tensor:
    """Loss weight of each latent cell, (B, 1, F, H, W), from the subject's cover (B, F, H, W): 1 + w * cover,
    where w is the image subject weight for the batch items conditioned on an image."""
    per_item = torch.from_numpy(np.where(with_image, image_subject_weight, subject_weight)).float()
    return 1 + per_item.view(-1, 1, 1, 1, 1) * cover.float().unsqueeze(1)


def i2v_condition(conditions: torch.Tensor) -> torch.Tensor:
    """Mask (4 channels: the first latent frame holds 4 known pixel frames) + image latent."""
    b, _, f, h, w = conditions.shape
    mask = torch.zeros(b, 4, f, h, w, dtype=conditions.dtype)
    mask[:, :, 0] = 1.0
    return torch.cat([mask, conditions], dim=1)


@torch.no_grad()
def initial_weights(model: WanTransformer3DModel, init: Path) -> None:
    """Start `model` from a trained transformer, as Wan starts image-to-video from text-to-video:
    every weight is copied; input channels the source lacks (the image condition) start at zero."""
    source = WanTransformer3DModel.from_pretrained(init).state_dict()
    target = model.state_dict()
    for name, value in source.items():
        if name not in target:
            raise ValueError(f"{init} does not fit this model: it has no parameter {name}.")
        if value.shape != target[name].shape:
            if name != "patch_embedding.weight" or value.shape[1] > target[name].shape[1]:
                raise ValueError(f"{init} does not fit this model: {name} is {tuple(value.shape)}, "
                                 f"not {tuple(target[name].shape)}.")
            value = torch.cat([value, value.new_zeros(value.shape[0], target[name].shape[1] - value.shape[1],
                                                      *value.shape[2:])], dim=1)
        target[name] = value
    model.load_state_dict(target)


def train(task: str, expert: str, boundary: float | None, latent_files: list[Path], text_dir: Path,
          out: Path, steps: int, batch: int, lr: float, shift: float, seed: int, minutes: float,
          log_every: int, init: Path | None = None, heads: int = 4, ffn: int = 512,
          subject_weight: float = 0.0, camera_weight: dict[str, float] | None = None,
          motion_weight: float = 0.0, image_subject_weight: float | None = None) -> None:
    """Train one transformer and save it (EMA weights) with save_pretrained."""
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    parts = [torch.load(f) for f in latent_files]
    latents = torch.cat([p["latents"] for p in parts])
    indices = [i for p in parts for i in p["indices"]]
    conditions = torch.cat([p["conditions"] for p in parts]) if task == "i2v" else None
    if image_subject_weight is None:
        image_subject_weight = subject_weight
    if (subject_weight or image_subject_weight) and any("subject" not in p for p in parts):
        raise ValueError("A subject weight needs latent files with subject coverage: run "
                         "training.cache_latents --subject-only --out FILE on older files.")
    subject = torch.cat([p["subject"] for p in parts]) if subject_weight or image_subject_weight else None
    draw = sampling_weights(indices, camera_weight) if camera_weight else None
    in_c, out_c = CHANNELS[task]
    config = {**TRANSFORMER, "num_attention_heads": heads, "ffn_dim": ffn}
    model = WanTransformer3DModel(in_channels=in_c, out_channels=out_c, **config).train()
    if init is not None:
        initial_weights(model, init)
    ema = WanTransformer3DModel(in_channels=in_c, out_channels=out_c, **config).eval()
    ema.load_state_dict(model.state_dict())
    ema.requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    encode = PromptEncoder(text_dir)
    lo, hi = sigma_range(expert, boundary, shift)
    print(f"{task}/{expert}: {len(indices)} clips, u in [{lo:.3f}, {hi:.3f}), "
          f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters", flush=True)
    start, deadline, losses = time.time(), time.time() + minutes * 60, []
    for step in range(steps):
        if time.time() > deadline:
            print(f"time cap reached at step {step}", flush=True)
            break
        for g in opt.param_groups:
            warm = min(1.0, (step + 1) / 50)
            g["lr"] = lr * warm * (0.15 + 0.85 * 0.5 * (1 + math.cos(math.pi * step / steps)))
        if draw is not None:
            pick = rng.choice(len(indices), size=batch, p=draw)
        else:  # as the committed weights were drawn
            pick = rng.integers(0, len(indices), batch)
        x0 = latents[pick].float()
        # with an image (i2v always, ti2v for half the batch) the studio composes in image order
        with_image = np.full(batch, task == "i2v") if task != "ti2v" else rng.random(batch) < 0.5
        prompts = []
        for i, image_mode in zip(pick, with_image):
            r = rng.random()
            prompts.append("" if r < 0.08 else DEFAULT_NEGATIVE_PROMPT if r < 0.16
                           else caption(spec_for(indices[i]), rng, keep=0.85, image_mode=bool(image_mode)))
        u = torch.from_numpy(lo + (hi - lo) * rng.random(batch)).float()
        sigma = shift * u / (1 + (shift - 1) * u)
        noise = torch.randn(x0.shape, generator=gen)
        s = sigma.view(-1, 1, 1, 1, 1)
        xt = (1 - s) * x0 + s * noise
        target = noise - x0
        weight = torch.ones_like(x0)
        if subject is not None:
            weight = weight * subject_loss_weight(subject[pick], with_image, subject_weight,
                                                  image_subject_weight)
        timestep = sigma * 1000
        if task == "i2v":
            xt = torch.cat([xt, i2v_condition(conditions[pick].float())], dim=1)
        elif task == "ti2v":
            # per-token timesteps; with an image, the first latent frame is clean and at t = 0
            f, h, w = x0.shape[2:]
            keep = torch.from_numpy(with_image)
            first = torch.ones(batch, 1, f, h, w)
            first[keep, :, 0] = 0.0
            xt = first * xt + (1 - first) * x0
            weight = weight * first
            timestep = (first[:, 0, :, ::2, ::2] * timestep.view(-1, 1, 1, 1)).flatten(1)
        context, bias = short_context(encode(prompts), MAX_SEQUENCE_LENGTH)
        with padded_cross_attention(model, bias):
            pred = model(hidden_states=xt, timestep=timestep, encoder_hidden_states=context,
                         return_dict=False)[0]
        loss = ((pred - target).pow(2) * weight).sum() / weight.sum()
        if motion_weight:
            loss = loss + motion_weight * temporal_difference_loss(pred, target, weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        decay = min(0.995, (1 + step) / (10 + step))
        with torch.no_grad():
            for pe, pm in zip(ema.parameters(), model.parameters()):
                pe.lerp_(pm, 1 - decay)
        losses.append(loss.item())
        if (step + 1) % log_every == 0:
            print(f"step {step + 1} loss {np.mean(losses[-log_every:]):.4f} "
                  f"t {time.time() - start:.0f}s", flush=True)
    out.mkdir(parents=True, exist_ok=True)
    ema.save_pretrained(out)
    (out / "train_log.txt").write_text(
        f"task={task} expert={expert} boundary={boundary} steps_run={len(losses)} of {steps} "
        f"batch={batch} lr={lr} shift={shift} seed={seed} clips={len(indices)} init={init} "
        f"heads={heads} ffn={ffn} subject_weight={subject_weight} "
        f"image_subject_weight={image_subject_weight} camera_weight={camera_weight} "
        f"motion_weight={motion_weight} "
        f"minutes={(time.time() - start) / 60:.1f} final_loss={np.mean(losses[-50:]):.4f}\n")


def argument_parser(task: str, experts: tuple[str, ...]) -> argparse.ArgumentParser:
    """The options of one variant's training script (training.train_t2v and its siblings)."""
    parser = argparse.ArgumentParser(description=f"Train the {task} demo transformer.")
    parser.add_argument("--expert", choices=experts, default=experts[0])
    parser.add_argument("--latents", type=Path, nargs="+", required=True)
    parser.add_argument("--text", type=Path, required=True, help="folder from training.train_text")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=6e-4)
    parser.add_argument("--shift", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--minutes", type=float, default=60.0, help="cap on the whole run")
    parser.add_argument("--log-every", type=int, default=20)
    parser.add_argument("--init", type=Path, help="start from this trained transformer folder")
    parser.add_argument("--heads", type=int, default=4, help="attention heads of 32 dimensions each")
    parser.add_argument("--ffn", type=int, default=512, help="feed-forward width")
    parser.add_argument("--subject-weight", type=float, default=0.0,
                        help="extra loss weight on latent cells the subject covers")
    parser.add_argument("--image-subject-weight", type=float,
                        help="subject weight for the batch items conditioned on an image "
                             "(default: --subject-weight)")
    parser.add_argument("--motion-weight", type=float, default=0.0,
                        help="weight of an extra loss on the change between latent frames")
    parser.add_argument("--camera-weight", nargs="+", default=[], metavar="MOVE=W",
                        help='draw clips with this camera move W times as often, e.g. "pan left=3"')
    return parser


def main(task: str, boundary: float | None, experts: tuple[str, ...]) -> None:
    """Command line for one variant's training script."""
    parser = argument_parser(task, experts)
    args = parser.parse_args()
    try:
        camera_weight = {k.strip(): float(v) for k, v in (item.rsplit("=", 1) for item in args.camera_weight)}
    except ValueError:
        parser.error('--camera-weight takes MOVE=WEIGHT items, e.g. "pan left=3".')
    train(task, args.expert, boundary, args.latents, args.text, args.out, args.steps, args.batch,
          args.lr, args.shift, args.seed, args.minutes, args.log_every, args.init, args.heads, args.ffn,
          args.subject_weight, camera_weight, args.motion_weight, args.image_subject_weight)
