"""training.train_vae: both phases run at the sizes asked for, and the log records them."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from training import train_vae


@pytest.fixture
def seen_shapes(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, ...]]:
    """Record the shape of every batch the loss sees; skip the held-out evaluation."""
    shapes: list[tuple[int, ...]] = []
    real_loss = train_vae.loss_fn

    def loss(vae, x: torch.Tensor) -> torch.Tensor:
        shapes.append(tuple(x.shape))
        return real_loss(vae, x)

    monkeypatch.setattr(train_vae, "loss_fn", loss)
    monkeypatch.setattr(train_vae, "held_out_psnr", lambda vae, clips=8, frames=17: 0.0)
    monkeypatch.setattr(train_vae, "set_latent_stats", lambda vae: None)
    return shapes


@pytest.mark.parametrize("video_crop, expected", [(None, 32), (16, 16)])
def test_video_phase_trains_on_its_own_crop(seen_shapes: list, tmp_path: Path, video_crop: int | None,
                                            expected: int) -> None:
    train_vae.train("wan21", image_steps=2, video_steps=1, crop=32, minutes=5, out=tmp_path, seed=0,
                    log_every=100, batch=2, video_crop=video_crop)
    assert seen_shapes == [(2, 3, 1, 32, 32)] * 2 + [(1, 3, 9, expected, expected)]
    log = (tmp_path / "train_log.txt").read_text()
    assert ("video_crop=16" in log) == (video_crop == 16)
    assert (tmp_path / "config.json").exists()


def test_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="--kind must be wan21 or wan22"):
        train_vae.build_vae("wan23")


def test_decoder_phase_leaves_the_encoder_as_it_was(seen_shapes: list, tmp_path: Path) -> None:
    """Latents cached from a run without the decoder phase stay valid for a run with it."""
    from diffusers import AutoencoderKLWan

    def run(decoder_steps: int) -> AutoencoderKLWan:
        out = tmp_path / f"d{decoder_steps}"
        train_vae.train("wan21", image_steps=2, video_steps=1, crop=32, minutes=5, out=out, seed=0,
                        log_every=100, batch=2, decoder_steps=decoder_steps, decoder_lr=1e-3)
        assert f"decoder_steps={decoder_steps}" in (out / "train_log.txt").read_text()
        return AutoencoderKLWan.from_pretrained(out)

    without, with_phase = run(0), run(2)
    assert seen_shapes[-2:] == [(1, 3, 9, 32, 32)] * 2  # the decoder phase trains on clips too
    for name, module in (("encoder", lambda v: v.encoder), ("quant_conv", lambda v: v.quant_conv)):
        a, b = module(without).state_dict(), module(with_phase).state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a), f"the decoder phase changed the {name}"
    a, b = without.decoder.state_dict(), with_phase.decoder.state_dict()
    assert not all(torch.equal(a[k], b[k]) for k in a), "the decoder phase did not train the decoder"
