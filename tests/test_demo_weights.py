"""The committed demo weights: complete diffusers folders the studio loads as its defaults, with
a VAE that reconstructs the world; and the training pieces that must match diffusers exactly."""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import math
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch

from pipelines.loader import inspect_folder
from pipelines.request import VariantDefaults, build_request
from pipelines.variants import get_variant
from training.data import HELD_OUT_OFFSET, clip_batch, spec_for, to_tensor
from training.dit import (TRANSFORMER, i2v_condition, sampling_weights, sigma_range,
                          temporal_difference_loss)
from training.short_context import padded_cross_attention, short_context
from training.world import CAMERAS

DEMO = Path(__file__).resolve().parent.parent / "weights" / "demo"
COMMITTED = ("t2v-a14b", "i2v-a14b", "ti2v-5b")  # folders this repository ships
MIN_PSNR_DB = {"t2v-a14b": 28.5, "i2v-a14b": 28.5, "ti2v-5b": 29.5}  # floors, 1.5 dB below measured


@pytest.mark.parametrize("variant", COMMITTED)
def test_folder_declares_itself_and_matches_the_variant(variant: str) -> None:
    info = inspect_folder(DEMO / variant)
    spec = get_variant(variant)
    assert info.variant_id == variant and info.is_demo
    assert info.studio["variant"] == variant
    assert info.transformer_in_channels == spec.transformer_in_channels
    assert info.boundary_ratio == spec.boundary_ratio
    assert (DEMO / variant / "README.md").read_text().count("## Scores") == 1


@pytest.mark.parametrize("variant", COMMITTED)
def test_studio_defaults_are_valid_requests_without_snapping(variant: str, tmp_path: Path) -> None:
    from PIL import Image

    studio = json.loads((DEMO / variant / "studio.json").read_text())
    defaults = VariantDefaults.official(get_variant(variant)).updated(studio["defaults"])
    raw = {"variant": variant, "prompt": "a red ball", "seed": 1}
    if get_variant(variant).image_input == "required":
        raw["image_path"] = str(tmp_path / "start.png")
        Image.new("RGB", (studio["defaults"]["width"], studio["defaults"]["height"])).save(raw["image_path"])
    validated = build_request(raw, defaults)
    assert validated.notices == ()
    assert (validated.request.width, validated.request.frames) == (studio["defaults"]["width"],
                                                                   studio["defaults"]["frames"])


def test_committed_weights_fit_the_size_budget() -> None:
    total = sum(p.stat().st_size for p in DEMO.rglob("*") if p.is_file())
    assert total <= 40 * 2**20


TRANSFORMER_MODULES = ("training.train_t2v", "training.train_i2v", "training.train_ti2v")


def train_all_jobs() -> dict[str, argparse.Namespace]:
    """Each transformer job and the text encoder's in training/train_all.sh (`run NAME module ...`),
    parsed by its own module's command line, defaults included."""
    from training.dit import argument_parser
    from training.train_text import argument_parser as text_argument_parser

    script = (DEMO.parent.parent / "training" / "train_all.sh").read_text().replace("\\\n", " ")
    jobs = {}
    for line in script.splitlines():
        words = shlex.split(line, comments=True)
        if words[:1] == ["run"] and words[2] in TRANSFORMER_MODULES:
            experts = importlib.import_module(words[2]).EXPERTS
            jobs[words[1]] = argument_parser(words[2], experts).parse_args(words[3:])
        elif words[:1] == ["run"] and words[2] == "training.train_text":
            jobs[words[1]] = text_argument_parser().parse_args(words[3:])
    return jobs


# each committed transformer and the train_all.sh job that is said to have made it
TRANSFORMER_JOBS = [("t2v-a14b", "transformer", "t2v_high"), ("t2v-a14b", "transformer_2", "t2v_low"),
                    ("i2v-a14b", "transformer", "i2v_high"), ("i2v-a14b", "transformer_2", "i2v_low"),
                    ("ti2v-5b", "transformer", "ti2v")]


@pytest.mark.parametrize("variant, component, job", TRANSFORMER_JOBS)
def test_committed_transformers_were_trained_by_train_all(variant: str, component: str, job: str) -> None:
    # the training log line each folder keeps must match what the script runs today, so that a
    # retrained folder cannot ship while the script still says the old recipe, nor the other way round
    line = json.loads((DEMO / variant / "training.json").read_text())[component]
    logged = dict(field.split("=", 1) for field in line.split() if "=" in field)
    options = train_all_jobs()[job]
    assert f"steps_run={options.steps} of {options.steps}" in line  # and no time cap hit
    assert int(logged["batch"]) == options.batch
    assert float(logged["lr"]) == options.lr
    assert float(logged["subject_weight"]) == options.subject_weight
    # logs written before the image subject weight existed used the subject weight for every item
    image_weight = options.image_subject_weight
    image_weight = options.subject_weight if image_weight is None else image_weight
    assert float(logged.get("image_subject_weight", logged["subject_weight"])) == image_weight
    assert float(logged["motion_weight"]) == options.motion_weight
    assert logged["expert"] == options.expert
    assert (logged["init"] != "None") == (options.init is not None)  # started from another expert
    assert (int(logged["heads"]), int(logged["ffn"]), int(logged["seed"])) == (options.heads, options.ffn,
                                                                             options.seed)
    config = json.loads((DEMO / variant / component / "config.json").read_text())
    assert (config["num_attention_heads"], config["ffn_dim"]) == (options.heads, options.ffn)


@pytest.mark.parametrize("variant", COMMITTED)
def test_committed_text_encoder_was_made_by_train_all(variant: str) -> None:
    line = json.loads((DEMO / variant / "training.json").read_text())["text"]
    logged = dict(field.split("=", 1) for field in line.split())
    options = train_all_jobs()["text"]
    assert (int(logged["phrase_steps"]), int(logged["seed"])) == (options.phrase_steps, options.seed)


@pytest.mark.parametrize("variant", COMMITTED)
def test_committed_text_encoder_tells_the_cameras_left_from_the_subjects(variant: str) -> None:
    # a random encoder is a bag of words ("left" in both phrases at cosine 0.9995), to which "pan left,
    # it moves to the right" and "pan right, it moves to the left" are one prompt: image-to-video subject
    # motion under a pan came out the wrong way round in half such pairs
    from transformers import AutoTokenizer, UMT5EncoderModel

    from training.captions import caption

    tokenizer = AutoTokenizer.from_pretrained(DEMO / variant / "tokenizer")
    encoder = UMT5EncoderModel.from_pretrained(DEMO / variant / "text_encoder", dtype=torch.float32).eval()
    ids = tokenizer(caption(dataclasses.replace(spec_for(0), camera="pan left", motion="left")),
                    return_tensors="pt").input_ids
    lefts = [i for i, t in enumerate(tokenizer.convert_ids_to_tokens(ids[0])) if t == "\u2581left"]
    with torch.no_grad():
        out = encoder(ids).last_hidden_state[0]
    assert len(lefts) == 2
    assert torch.nn.functional.cosine_similarity(out[lefts[0]], out[lefts[1]], dim=0) < 0.8


@pytest.mark.slow
@pytest.mark.parametrize("variant", COMMITTED)
def test_vae_reconstructs_a_held_out_world_clip(variant: str) -> None:
    from diffusers import AutoencoderKLWan

    vae = AutoencoderKLWan.from_pretrained(DEMO / variant, subfolder="vae", dtype=torch.float32)
    x = clip_batch([HELD_OUT_OFFSET + 900], 17)
    with torch.no_grad():
        y = vae(x).sample
    psnr = 10 * math.log10(1 / ((x - y) / 2).pow(2).mean().item())
    assert psnr > MIN_PSNR_DB[variant]


@pytest.mark.slow
@pytest.mark.parametrize("variant", COMMITTED)
def test_vae_keeps_a_pans_motion(variant: str) -> None:
    from diffusers import AutoencoderKLWan

    from training.measure import motion
    from training.world import render

    vae = AutoencoderKLWan.from_pretrained(DEMO / variant, subfolder="vae", dtype=torch.float32)
    kept = []
    # 16 pans: a clip whose trees and clouds the VAE blurs away measures no motion at all, so the
    # ratio is 0 or about 1 per clip and 8 clips gave a noisy mean (0.50 for the 10000-step VAE)
    for i in range(16):
        pan = ("pan left", "pan right")[i % 2]
        spec = dataclasses.replace(spec_for(HELD_OUT_OFFSET + 500 + i), camera=pan)
        world = render(spec, 17, 64, 64)
        with torch.no_grad():
            y = vae(to_tensor(world)[None]).sample.clamp(-1, 1)
        kept.append(motion((y[0].permute(1, 2, 3, 0).numpy() + 1) / 2)[1] / motion(world)[1])
    assert np.mean(kept) > 0.5  # the reconstruction moves at least half as far, the same way, on average


@pytest.mark.slow
@pytest.mark.parametrize("variant", COMMITTED)
def test_pipeline_loads_offline_and_generates_the_default_shape(variant: str) -> None:
    from diffusers import DiffusionPipeline

    pipe = DiffusionPipeline.from_pretrained(DEMO / variant, dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    d = json.loads((DEMO / variant / "studio.json").read_text())["defaults"]
    kwargs = {}
    if variant == "i2v-a14b":
        from PIL import Image

        kwargs["image"] = Image.new("RGB", (d["width"], d["height"]), (200, 40, 40))
    out = pipe(prompt="a red ball, in a green meadow, it stays still", height=d["height"],
               width=d["width"], num_frames=d["frames"], num_inference_steps=2, output_type="np",
               generator=torch.Generator().manual_seed(0), **kwargs).frames
    assert np.asarray(out).shape == (1, d["frames"], d["height"], d["width"], 3)


def test_assembling_two_experts_without_the_second_is_refused() -> None:
    from training.assemble import build

    folder = DEMO / "t2v-a14b"
    with pytest.raises(ValueError, match="two experts"):
        build("t2v-a14b", folder / "vae", folder, folder / "transformer", None)


def test_short_context_matches_512_token_padding() -> None:
    from diffusers import WanTransformer3DModel

    torch.manual_seed(0)
    model = WanTransformer3DModel(in_channels=16, out_channels=16, **TRANSFORMER).eval()
    for p in model.parameters():
        p.data += 0.02 * torch.randn_like(p)
    embeds = [torch.randn(n, TRANSFORMER["text_dim"]) for n in (1, 9, 20)]
    full = torch.zeros(3, 512, TRANSFORMER["text_dim"])
    for i, e in enumerate(embeds):
        full[i, : len(e)] = e
    x, t = torch.randn(3, 16, 2, 4, 4), torch.tensor([100.0, 500.0, 900.0])
    with torch.no_grad():
        reference = model(hidden_states=x, timestep=t, encoder_hidden_states=full, return_dict=False)[0]
        context, bias = short_context(embeds)
        with padded_cross_attention(model, bias):
            short = model(hidden_states=x, timestep=t, encoder_hidden_states=context, return_dict=False)[0]
        after = model(hidden_states=x, timestep=t, encoder_hidden_states=full, return_dict=False)[0]
    assert torch.allclose(short, reference, atol=1e-5)
    assert torch.equal(after, reference)  # the bias does not leak out of the block


def test_short_context_refuses_prompts_longer_than_the_pipeline_reads() -> None:
    with pytest.raises(ValueError, match="shorter than 512"):
        short_context([torch.zeros(512, 4)])


def test_i2v_condition_matches_the_diffusers_pipeline() -> None:
    from tiny_models import build_tiny_pipeline

    pipe = build_tiny_pipeline("i2v-a14b")
    image = torch.rand(1, 3, 64, 64) * 2 - 1
    _, condition = pipe.prepare_latents(image, 1, 16, 64, 64, 17, torch.float32, torch.device("cpu"),
                                        torch.Generator().manual_seed(0))
    ours = i2v_condition(condition[:, 4:])
    assert torch.equal(ours, condition)


@pytest.mark.parametrize("boundary", [0.875, 0.9])
def test_experts_train_on_their_side_of_the_boundary(boundary: float) -> None:
    shift = 5.0
    sigma = lambda u: shift * u / (1 + (shift - 1) * u)  # noqa: E731
    lo, hi = sigma_range("high", boundary, shift)
    assert math.isclose(sigma(lo), boundary) and hi == 1.0
    lo2, hi2 = sigma_range("low", boundary, shift)
    assert lo2 == 0.0 and math.isclose(sigma(hi2), boundary)
    with pytest.raises(ValueError, match="boundary"):
        sigma_range("high", None, shift)


def test_camera_weights_draw_the_named_moves_more_often() -> None:
    indices = list(range(600))
    pans = np.array([spec_for(i).camera in ("pan left", "pan right") for i in indices])
    even = sampling_weights(indices, {})
    assert np.allclose(even, 1 / 600)
    draw = sampling_weights(indices, {"pan left": 3, "pan right": 3})
    share = pans.mean()
    assert math.isclose(draw[pans].sum(), 3 * share / (3 * share + 1 - share))
    assert math.isclose(draw.sum(), 1.0)


@pytest.mark.parametrize("weights, message", [({"pan sideways": 2}, "Unknown camera move"),
                                              ({move: 0 for move in CAMERAS}, "non-negative"),
                                              ({"pan left": -1}, "non-negative")])
def test_camera_weights_refuse_unknown_moves_and_empty_draws(weights: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        sampling_weights(list(range(50)), weights)


def test_temporal_difference_loss_sees_motion_not_constant_errors() -> None:
    target = torch.randn(2, 4, 5, 4, 4)
    ones = torch.ones_like(target)
    assert temporal_difference_loss(target, target, ones) == 0
    assert temporal_difference_loss(target + 0.5, target, ones) < 1e-10  # same error in every frame
    still = target[:, :, :1].expand_as(target)  # a prediction that holds the first frame
    assert temporal_difference_loss(still, target, ones) > 0.5
    first_clean = ones.clone()
    first_clean[:, :, 0] = 0  # ti2v's clean first frame carries no loss
    moved_first = target.clone()
    moved_first[:, :, 0] += 3.0
    assert temporal_difference_loss(moved_first, target, first_clean) == 0


def test_i2v_starts_from_t2v_with_the_image_channels_at_zero(tmp_path: Path) -> None:
    from diffusers import WanTransformer3DModel

    from training.dit import initial_weights

    torch.manual_seed(0)
    t2v = WanTransformer3DModel(in_channels=16, out_channels=16, **TRANSFORMER).eval()
    t2v.save_pretrained(tmp_path / "t2v")
    i2v = WanTransformer3DModel(in_channels=36, out_channels=16, **TRANSFORMER).eval()
    initial_weights(i2v, tmp_path / "t2v")
    x, t = torch.randn(2, 16, 2, 4, 4), torch.tensor([100.0, 900.0])
    context = torch.randn(2, 5, TRANSFORMER["text_dim"])
    condition = torch.randn(2, 20, 2, 4, 4)
    with torch.no_grad():
        expected = t2v(hidden_states=x, timestep=t, encoder_hidden_states=context, return_dict=False)[0]
        got = i2v(hidden_states=torch.cat([x, condition], 1), timestep=t, encoder_hidden_states=context,
                  return_dict=False)[0]
    assert torch.allclose(got, expected, atol=1e-6)
    assert i2v.patch_embedding.weight[:, 16:].abs().max() == 0


def test_initial_weights_refuse_a_transformer_of_another_shape(tmp_path: Path) -> None:
    from diffusers import WanTransformer3DModel

    from training.dit import initial_weights

    WanTransformer3DModel(in_channels=48, out_channels=48, **TRANSFORMER).save_pretrained(tmp_path / "ti2v")
    model = WanTransformer3DModel(in_channels=36, out_channels=16, **TRANSFORMER)
    with pytest.raises(ValueError, match="does not fit this model"):
        initial_weights(model, tmp_path / "ti2v")


def test_prompt_encoder_gives_the_rows_of_the_pipelines_512_token_encoding(tmp_path: Path) -> None:
    from training.captions import caption
    from training.dit import MAX_SEQUENCE_LENGTH, PromptEncoder
    from training.text import build_text_encoder, build_tokenizer

    tokenizer = build_tokenizer()
    tokenizer.save_pretrained(tmp_path / "tokenizer")
    build_text_encoder(tokenizer).save_pretrained(tmp_path / "text_encoder")
    encoder = PromptEncoder(tmp_path)
    prompts = [caption(spec_for(i)) for i in range(3)] + ["", "a red ball. Pan left."]
    short = encoder(prompts)
    full = encoder.pipe._get_t5_prompt_embeds(prompts, max_sequence_length=MAX_SEQUENCE_LENGTH,
                                              device=torch.device("cpu"))
    for rows, padded in zip(short, full):
        assert torch.allclose(padded[: len(rows)], rows, atol=1e-6)
        assert padded[len(rows):].abs().max() == 0


@pytest.mark.parametrize("variant", ["t2v-a14b", "i2v-a14b", "ti2v-5b"])
def test_the_demo_folders_say_what_their_models_know(variant: str) -> None:
    from training.captions import knowledge

    studio = json.loads((DEMO / variant / "studio.json").read_text())
    assert studio["knows"] == knowledge(), "written by training.assemble from the world's captions"
