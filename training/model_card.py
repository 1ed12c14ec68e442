"""Model cards (README.md) for the demo folders, from their configs, training logs and scores."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

COMMANDS = {
    "t2v-a14b": [
        "python -m training.train_vae --kind wan21 --out /tmp/demo/vae_wan21",
        "python -m training.train_text --out /tmp/demo/text",
        "python -m training.cache_latents --vae /tmp/demo/vae_wan21 --count 600 --out /tmp/demo/lat16.pt",
        "python -m training.train_t2v --expert high --latents /tmp/demo/lat16.pt --text /tmp/demo/text "
        "--out /tmp/demo/t2v_high",
        "python -m training.train_t2v --expert low --latents /tmp/demo/lat16.pt --text /tmp/demo/text "
        "--out /tmp/demo/t2v_low",
        "python -m training.assemble --variant t2v-a14b --vae /tmp/demo/vae_wan21 --text /tmp/demo/text "
        "--transformer /tmp/demo/t2v_high --transformer-2 /tmp/demo/t2v_low --out weights/demo/t2v-a14b",
    ],
    "i2v-a14b": [
        "python -m training.cache_latents --vae /tmp/demo/vae_wan21 --count 600 --i2v --out /tmp/demo/lat16i.pt",
        "python -m training.train_i2v --expert high --latents /tmp/demo/lat16i.pt --text /tmp/demo/text "
        "--out /tmp/demo/i2v_high",
        "python -m training.train_i2v --expert low --latents /tmp/demo/lat16i.pt --text /tmp/demo/text "
        "--out /tmp/demo/i2v_low",
        "python -m training.assemble --variant i2v-a14b --vae /tmp/demo/vae_wan21 --text /tmp/demo/text "
        "--transformer /tmp/demo/i2v_high --transformer-2 /tmp/demo/i2v_low --out weights/demo/i2v-a14b",
    ],
    "ti2v-5b": [
        "python -m training.train_vae --kind wan22 --out /tmp/demo/vae_wan22",
        "python -m training.cache_latents --vae /tmp/demo/vae_wan22 --count 600 --out /tmp/demo/lat48.pt",
        "python -m training.train_ti2v --latents /tmp/demo/lat48.pt --text /tmp/demo/text --out /tmp/demo/ti2v",
        "python -m training.assemble --variant ti2v-5b --vae /tmp/demo/vae_wan22 --text /tmp/demo/text "
        "--transformer /tmp/demo/ti2v --out weights/demo/ti2v-5b",
    ],
}


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
        "## Training (deterministic, fixed seeds; run with `nice -n 10` on 2 CPU cores)",
        "",
        "```",
        *COMMANDS[variant],
        "```",
        "",
        "Runs that produced these files:",
        "",
        *(f"- {name}: `{log}`" for name, log in training.items()),
        "",
        "The text encoder is a seeded random 2-layer UMT5 (d_model 64), not trained: the "
        "transformers learn the caption words through cross-attention.",
        "",
        "## Scores (benchmarks/bench_demo_quality.py)",
        "",
    ]
    if scores:
        lines += ["| measure | result | target |", "|---|---|---|"]
        lines += [f"| {row['measure']} | {row['result']} | {row['target']} |" for row in scores["rows"]]
        lines += ["", scores.get("note", "")]
    else:
        lines.append("Not measured yet.")
    (folder / "README.md").write_text("\n".join(lines).rstrip() + "\n", encoding="utf-8")
    return folder / "README.md"
