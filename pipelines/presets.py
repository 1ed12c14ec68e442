"""Step-distill presets as data: a LoRA per expert, their strengths, and the sampling they need.

"Lightning"-style distill LoRAs make an A14B clip in 4 steps (2 high-noise + 2 low-noise at the
A14B boundary) at guidance 1, i.e. one transformer pass per step and no negative prompt. A preset
names the LoRA FILES only; where they live (a local folder or a Hub repo) is the user's setting
(`--preset-source`, `WAN_STUDIO_PRESET_LORAS`, or the Hub repo the preset suggests), exactly as
for weights. Picking a preset sets steps, guidance and shift: `preset_form_values` gives the UI the
values to put in the form, and `build_request` applies them to whatever the request leaves unset.

The strengths are the community's usual values, not measured here: users commonly run the
high-noise LoRA stronger to counter the slow motion these LoRAs are known for.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

PRESET_SOURCE_ENV = "WAN_STUDIO_PRESET_LORAS"  # a folder or Hub repo holding the presets' files


@dataclass(frozen=True)
class DistillPreset:
    """A step-distill recipe: which LoRA file goes on which expert, and how to sample with it."""

    id: str
    label: str
    variant: str
    high_file: str  # the LoRA for `transformer` (the only expert of TI2V-5B)
    low_file: str | None  # the LoRA for `transformer_2` (A14B only)
    high_strength: float
    low_strength: float
    steps: int
    guidance: float
    guidance_low: float | None
    flow_shift: float
    suggested_source: str | None  # a Hub repo known to hold these file names, if any
    notes: str

    def files(self) -> tuple[tuple[str, float, float], ...]:
        """(file, high strength, low strength) for each LoRA of the preset."""
        if self.low_file is None:
            return ((self.high_file, self.high_strength, 0.0),)
        if self.low_file == self.high_file:
            return ((self.high_file, self.high_strength, self.low_strength),)
        return ((self.high_file, self.high_strength, 0.0), (self.low_file, 0.0, self.low_strength))


_KIJAI = "Kijai/WanVideo_comfy"  # holds the Wan2.2 Lightning pair under Wan22-Lightning/

PRESETS: dict[str, DistillPreset] = {p.id: p for p in (
    DistillPreset(
        id="t2v-lightning-4step", label="T2V Lightning, 4 steps (2 + 2)", variant="t2v-a14b",
        high_file="Wan22-Lightning/Wan2.2-Lightning_T2V-A14B-4steps-lora_HIGH_fp16.safetensors",
        low_file="Wan22-Lightning/Wan2.2-Lightning_T2V-A14B-4steps-lora_LOW_fp16.safetensors",
        high_strength=1.0, low_strength=1.0, steps=4, guidance=1.0, guidance_low=1.0,
        flow_shift=5.0, suggested_source=_KIJAI,
        notes="The Wan2.2-Lightning T2V pair at its published strengths.",
    ),
    DistillPreset(
        id="t2v-lightning-4step-motion", label="T2V Lightning, 4 steps, stronger high-noise LoRA",
        variant="t2v-a14b",
        high_file="Wan22-Lightning/Wan2.2-Lightning_T2V-A14B-4steps-lora_HIGH_fp16.safetensors",
        low_file="Wan22-Lightning/Wan2.2-Lightning_T2V-A14B-4steps-lora_LOW_fp16.safetensors",
        high_strength=1.5, low_strength=1.0, steps=4, guidance=1.0, guidance_low=1.0,
        flow_shift=5.0, suggested_source=_KIJAI,
        notes="The same pair with the high-noise LoRA at 1.5: more motion, as users report.",
    ),
    DistillPreset(
        id="i2v-lightning-4step", label="I2V Lightning, 4 steps (2 + 2)", variant="i2v-a14b",
        high_file="Wan22-Lightning/Wan2.2-Lightning_I2V-A14B-4steps-lora_HIGH_fp16.safetensors",
        low_file="Wan22-Lightning/Wan2.2-Lightning_I2V-A14B-4steps-lora_LOW_fp16.safetensors",
        high_strength=1.0, low_strength=1.0, steps=4, guidance=1.0, guidance_low=1.0,
        flow_shift=5.0, suggested_source=_KIJAI,
        notes="The Wan2.2-Lightning I2V pair at its published strengths.",
    ),
    DistillPreset(
        id="ti2v-distill-4step", label="TI2V-5B distill LoRA, 4 steps", variant="ti2v-5b",
        high_file="ti2v_5b_distill_4step_lora.safetensors", low_file=None,
        high_strength=1.0, low_strength=0.0, steps=4, guidance=1.0, guidance_low=None,
        flow_shift=5.0, suggested_source=None,
        notes="No public 4-step LoRA for TI2V-5B was verified: put your own file under this name.",
    ),
)}


def get_preset(preset_id: str) -> DistillPreset:
    """Look a preset up by id, or raise a ValueError listing the known ids."""
    try:
        return PRESETS[preset_id]
    except KeyError:
        raise ValueError(f"Unknown preset {preset_id!r}; choose one of: {', '.join(PRESETS)}.") from None


def presets_for(variant_id: str) -> list[DistillPreset]:
    """The presets made for a variant, in table order (for a picker)."""
    return [p for p in PRESETS.values() if p.variant == variant_id]


def preset_form_values(preset_id: str) -> dict[str, Any]:
    """The form values picking a preset sets: steps, guidance pair, flow shift and the preset id."""
    preset = get_preset(preset_id)
    return {"preset": preset.id, "steps": preset.steps, "guidance": preset.guidance,
            "guidance_low": preset.guidance_low, "flow_shift": preset.flow_shift}
