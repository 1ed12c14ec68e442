"""Shared fixtures: offline environment and tiny Wan2.2 weights folders for every variant."""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))

from tiny_models import save_tiny_pipeline  # noqa: E402

VARIANT_IDS = ("t2v-a14b", "i2v-a14b", "ti2v-5b")


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Folders holding tiny random pipelines, saved with `save_pretrained`, keyed by variant id."""
    root = tmp_path_factory.mktemp("tiny-weights")
    return {v: save_tiny_pipeline(v, root / v) for v in VARIANT_IDS}
