"""The demo benchmark's control pairs and the subject weighting of transformer training: the
measurements must see every control on the world's own clips, or a model could never reach 90%."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from training.cache_latents import subject_coverage
from training.control_pairs import IMAGE_PAIRS, PAIRS, SUBJECT_VISIBLE, outcome, pair_specs, world_outcome
from training.data import spec_for
from training.world import render, subject_mask


@pytest.mark.parametrize("pair", PAIRS + IMAGE_PAIRS[1:], ids=lambda p: p.name)
def test_the_world_gets_every_pair_right(pair) -> None:
    world = world_outcome(pair, seeds=12)
    assert world.right == world.seeds == 12 and world.effect > 0


def test_clips_that_do_not_change_count_as_wrong_with_no_effect() -> None:
    pair = PAIRS[1]  # pan left vs right
    specs = pair_specs(pair, seeds=3)
    still = np.zeros((17, 64, 64, 3), np.uint8)
    assert outcome(pair, [(still, still)] * 3, specs) == (0, 3, 0.0)
    world = world_outcome(pair, seeds=3)
    swapped = [(b, a) for a, b in [((render(a, 17, 64, 64) * 255).astype(np.uint8),
                                    (render(b, 17, 64, 64) * 255).astype(np.uint8)) for _, a, b in specs]]
    reversed_ = outcome(pair, swapped, specs)
    assert reversed_.right == 0 and reversed_.effect < -0.5 * world.effect


def test_sides_differ_only_in_the_control_and_subject_pairs_keep_it_visible() -> None:
    for pair in PAIRS + IMAGE_PAIRS:
        for base, a, b in pair_specs(pair, seeds=4):
            assert getattr(a, pair.field) == pair.side_a and getattr(b, pair.field) == pair.side_b
            assert dataclasses.replace(a, **{pair.field: pair.side_b}) == b
            assert dataclasses.replace(base, **{pair.field: pair.side_a}) == a
            if pair.subject:
                assert all(getattr(a, k) == v for k, v in SUBJECT_VISIBLE.items())


def test_subject_coverage_pools_the_subject_mask_onto_the_latent_grid() -> None:
    cover = subject_coverage([3, 4], (5, 8, 8))
    assert cover.shape == (2, 5, 8, 8) and cover.min() >= 0 and cover.max() <= 1
    for row, index in zip(cover.float(), (3, 4)):
        mask = subject_mask(spec_for(index))
        assert torch.isclose(row[0].mean(), torch.tensor(mask[0].mean(), dtype=torch.float32), atol=1e-3)
        assert torch.isclose(row[1:].mean(), torch.tensor(mask[1:].mean(), dtype=torch.float32), atol=1e-3)
    close = dataclasses.replace(spec_for(3), shot="close-up")
    assert np.mean(subject_mask(close)) > np.mean(subject_mask(dataclasses.replace(close, shot="wide shot")))


def test_a_subject_weight_needs_latents_with_subject_coverage(tmp_path: Path) -> None:
    from training.dit import train

    torch.save({"indices": [0], "latents": torch.zeros(1, 16, 5, 8, 8)}, tmp_path / "old.pt")
    with pytest.raises(ValueError, match="subject-only"):
        train("t2v", "high", 0.875, [tmp_path / "old.pt"], tmp_path / "text", tmp_path / "out", steps=1,
              batch=1, lr=1e-4, shift=5.0, seed=0, minutes=1, log_every=1, subject_weight=4.0)


def test_items_with_an_image_take_the_image_subject_weight() -> None:
    from training.dit import subject_loss_weight

    cover = torch.zeros(2, 5, 8, 8)
    cover[:, :, 2:4, 2:4] = 0.5  # half of four cells in every frame
    weight = subject_loss_weight(cover, np.array([False, True]), subject_weight=4.0, image_subject_weight=8.0)
    assert weight.shape == (2, 1, 5, 8, 8)
    assert weight[0, 0, :, 2, 2].eq(3.0).all() and weight[1, 0, :, 2, 2].eq(5.0).all()
    assert weight[:, :, :, 0, 0].eq(1.0).all()  # cells without the subject keep weight 1


def test_model_card_shows_the_worlds_own_score_beside_the_models(tmp_path: Path) -> None:
    from training.model_card import met, write_card

    folder = tmp_path / "ti2v-5b"
    folder.mkdir()
    (folder / "studio.json").write_text(json.dumps({"variant": "ti2v-5b", "defaults": {}}))
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "WanPipeline"}))
    row = {"measure": "text: pan left vs right", "result": "30/32", "target": ">= 90%", "world": "32/32",
           "effect": "85%"}
    (folder / "scores.json").write_text(json.dumps({"rows": [row]}))
    card = write_card(folder).read_text()
    assert "| text: pan left vs right | 30/32 | >= 90% | yes | 32/32 | 85% |" in card
    assert met(row) and not met({**row, "result": "28/32"})


@pytest.mark.parametrize("log, says", [
    ("phrase_steps=600 seed=0 token_accuracy=0.999", "taught for 600 steps"),
    ("phrase_steps=0 seed=0", "seeded random 2-layer UMT5"),
    (None, "seeded random 2-layer UMT5"),  # folders assembled before train_text wrote its log
])
def test_model_card_says_whether_the_text_encoder_was_taught(tmp_path: Path, log: str | None,
                                                            says: str) -> None:
    from training.model_card import write_card

    folder = tmp_path / "t2v-a14b"
    folder.mkdir()
    (folder / "studio.json").write_text(json.dumps({"variant": "t2v-a14b", "defaults": {}}))
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "WanPipeline"}))
    (folder / "training.json").write_text(json.dumps({"text": log} if log else {}))
    card = write_card(folder).read_text()
    assert says in card
    assert ("- text: `" in card) == (log is not None)
