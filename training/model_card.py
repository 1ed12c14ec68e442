"""Model cards (README.md) for the demo folders, from their configs, training logs and scores."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SCRIPT = "training/train_all.sh"


def _json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _params(folder: Path, component: str) -> str:
    from math import prod

    from safetensors import safe_open

    total = 0
    for file in (folder / component).glob("*.safetensors"):
        with safe_open(str(file), framework="pt") as handle:
            total += sum(prod(handle.get_slice(key).get_shape()) for key in handle.keys())
    return f"{total / 1e6:.2f}M"


def met(row: dict[str, str]) -> bool:
    """Whether a scores.json row reaches its target (">= 28 dB", ">= 0.85", ">= 90%", "< 20")."""
    result, target = row["result"].split()[0], row["target"]
    value = int(result.split("/")[0]) / int(result.split("/")[1]) * 100 if "/" in result else float(result)
    bound = float(target.split()[1].rstrip("%"))
    return value < bound if target.startswith("<") else value >= bound


def _text_encoder_line(log: str) -> str:
    """What the card says of the text encoder, from its training log (train_text.py)."""
    steps = int(dict(f.split("=", 1) for f in log.split() if "=" in f).get("phrase_steps", 0))
    how = ("not trained: the transformers learn the caption words through cross-attention"
           if not steps else
           f"taught for {steps} steps which phrase each token belongs to (training/text.py), so that "
           "\"left\" in \"pan left\" and in \"it moves to the left\" encode apart (a random encoder is a bag "
           "of words: \"pan left ... it moves to the right\" and \"pan right ... it moves to the left\" read "
           "alike); the transformers learn what the phrases mean through cross-attention")
    kind = "seeded 2-layer UMT5" if steps else "seeded random 2-layer UMT5"
    return (f"The text encoder is a {kind} (d_model 64), {how}. A capitalised word shares "
            "its lower-case word's embedding, so the composer's sentence case changes nothing.")


def write_card(folder: Path) -> Path:
    """Write README.md in a demo folder from studio.json, training.json and scores.json."""
    folder = Path(folder)
    studio = _json(folder / "studio.json")
    training = _json(folder / "training.json")
    scores = _json(folder / "scores.json")
    variant = studio["variant"]
    index = _json(folder / "model_index.json")
    components = [k for k, v in index.items() if isinstance(v, list) and v[0] is not None]
    lines = [
        f"# Wan Studio demo weights: {variant}",
        "",
        f"A tiny model with the real Wan2.2 `{variant}` architecture ({index.get('_class_name')}), "
        "trained from scratch on procedurally generated 64x64 clips (training/world.py: one shape "
        "of a named colour on sky and ground, lit and filmed as the studio's cinematic controls "
        "describe). It exists so the studio runs on a CPU with no download; it knows only the "
        "words in its captions and makes tiny, simple videos. For real videos point the studio at "
        "the real weights: `python app.py --weights "
        f"{variant}=Wan-AI/{ {'t2v-a14b': 'Wan2.2-T2V-A14B', 'i2v-a14b': 'Wan2.2-I2V-A14B', 'ti2v-5b': 'Wan2.2-TI2V-5B'}[variant] }-Diffusers`.",
        "",
        "## Components",
        "",
        *(f"- `{c}`: {index[c][1]}" + (f", {_params(folder, c)} parameters"
                                       if (folder / c).is_dir() and any((folder / c).glob('*.safetensors')) else "")
          for c in components),
        "- weights stored in fp16 safetensors (load in fp32 on CPU).",
        "",
        "## Studio defaults (studio.json)",
        "",
        "```json",
        json.dumps(studio.get("defaults", {}), indent=2),
        "```",
        "",
        "## Training (deterministic, fixed seeds, 2 CPU cores)",
        "",
        f"`bash {SCRIPT}` trains every demo model from scratch and assembles this folder; the runs "
        "that produced these files (each line is the component's own training log):",
        "",
        *(f"- {name}: `{log}`" for name, log in training.items()),
        "",
        _text_encoder_line(training.get("text", "")),
        "",
        "## Scores (benchmarks/bench_demo_quality.py)",
        "",
    ]
    if scores:
        # "world": what the same measurement gives on the world's own clips, its ceiling; "effect":
        # the model's median side-A-minus-B difference as a share of the world's
        lines += ["| measure | result | target | met | world's own clips | effect, share of the world's |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {row['measure']} | {row['result']} | {row['target']} | {'yes' if met(row) else 'no'} "
                  f"| {row.get('world', '')} | {row.get('effect', '')} |" for row in scores["rows"]]
        lines += ["", scores.get("note", "")]
        missed = [row["measure"] for row in scores["rows"] if not met(row)]
        lines += ["", "Targets missed: " + "; ".join(missed) + "." if missed else "Every target is met."]
        if scores.get("analysis"):
            lines += ["", "## Why, and what would help", "", scores["analysis"]]
    else:
        lines.append("Not measured yet.")
    (folder / "README.md").write_text("\n".join(lines).rstrip() + "\n", encoding="utf-8")
    return folder / "README.md"
