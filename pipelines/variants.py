"""The three Wan2.2 variants as data: official defaults, limits and what each one takes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

ImageInput = Literal["none", "required", "optional"]


@dataclass(frozen=True)
class VariantSpec:
    """Everything the studio needs to know about one Wan2.2 variant."""

    id: str
    label: str
    hub_repo: str
    pipeline_class: str  # diffusers class for text-only runs (or the only one)
    image_pipeline_class: str  # diffusers class when an image is given
    image_input: ImageInput
    experts: int  # 2 = high-noise `transformer` + low-noise `transformer_2`
    boundary_ratio: float | None
    expand_timesteps: bool
    transformer_in_channels: int
    vae_z_dim: int
    vae_spatial_stride: int
    sizes: tuple[tuple[int, int], ...]  # official (width, height) pairs
    size_multiple: int
    frames: int
    fps: int
    steps: int
    flow_shift: float
    guidance: float
    guidance_low: float | None
    continues_takes: bool = False  # "Continue" may animate a take's last frame with it
    # an end image (diffusers' `last_image`): the A14B image pipeline conditions the last frame on
    # it; with `expand_timesteps` (TI2V-5B) diffusers 0.42 ignores it silently, so it is refused
    takes_last_image: bool = False
    # ZeroGPU's duration estimate: a published seconds-per-step at a reference token count
    # (WAN22.md: H100 for the A14B pair at 1280x720x81, RTX 4090 for TI2V-5B at 1280x704x121)
    reference_step_s: float = 0.0
    reference_tokens: int = 1

    @property
    def default_size(self) -> tuple[int, int]:
        """The first official (width, height)."""
        return self.sizes[0]

    @property
    def max_side(self) -> int:
        """The largest official side; requests above it are refused."""
        return max(max(w, h) for w, h in self.sizes)

    @property
    def takes_image(self) -> bool:
        """Whether this variant accepts a start image at all."""
        return self.image_input != "none"

    @property
    def boundary_timestep(self) -> float | None:
        """Timestep at or above which the high-noise expert runs (1000 training timesteps)."""
        return None if self.boundary_ratio is None else self.boundary_ratio * 1000


T2V_A14B = VariantSpec(
    id="t2v-a14b",
    label="T2V-A14B (text to video, two experts)",
    hub_repo="Wan-AI/Wan2.2-T2V-A14B-Diffusers",
    pipeline_class="WanPipeline",
    image_pipeline_class="WanPipeline",
    image_input="none",
    experts=2,
    boundary_ratio=0.875,
    expand_timesteps=False,
    transformer_in_channels=16,
    vae_z_dim=16,
    vae_spatial_stride=8,
    sizes=((1280, 720), (720, 1280), (832, 480), (480, 832)),
    size_multiple=16,
    frames=81,
    fps=16,
    steps=40,
    flow_shift=12.0,
    guidance=4.0,
    guidance_low=3.0,
    reference_step_s=1041.5 / 40,
    reference_tokens=21 * 45 * 80,
)

I2V_A14B = VariantSpec(
    id="i2v-a14b",
    label="I2V-A14B (image to video, two experts)",
    hub_repo="Wan-AI/Wan2.2-I2V-A14B-Diffusers",
    pipeline_class="WanImageToVideoPipeline",
    image_pipeline_class="WanImageToVideoPipeline",
    image_input="required",
    experts=2,
    boundary_ratio=0.900,
    expand_timesteps=False,
    transformer_in_channels=36,
    vae_z_dim=16,
    vae_spatial_stride=8,
    sizes=((1280, 720), (720, 1280), (832, 480), (480, 832)),
    size_multiple=16,
    frames=81,
    fps=16,
    steps=40,
    flow_shift=5.0,
    guidance=3.5,
    guidance_low=3.5,
    continues_takes=True,
    takes_last_image=True,
    reference_step_s=1055.9 / 40,
    reference_tokens=21 * 45 * 80,
)

TI2V_5B = VariantSpec(
    id="ti2v-5b",
    label="TI2V-5B (text or image to video, one model)",
    hub_repo="Wan-AI/Wan2.2-TI2V-5B-Diffusers",
    pipeline_class="WanPipeline",
    image_pipeline_class="WanImageToVideoPipeline",
    image_input="optional",
    experts=1,
    boundary_ratio=None,
    expand_timesteps=True,
    transformer_in_channels=48,
    vae_z_dim=48,
    vae_spatial_stride=16,
    sizes=((1280, 704), (704, 1280)),
    size_multiple=32,
    frames=121,
    fps=24,
    steps=50,
    flow_shift=5.0,
    guidance=5.0,
    guidance_low=None,
    continues_takes=True,
    reference_step_s=534.7 / 50,
    reference_tokens=31 * 22 * 40,
)

VARIANTS: dict[str, VariantSpec] = {v.id: v for v in (T2V_A14B, I2V_A14B, TI2V_5B)}


def get_variant(variant_id: str) -> VariantSpec:
    """Look a variant up by id, or raise a ValueError that lists the known ids."""
    try:
        return VARIANTS[variant_id]
    except KeyError:
        known = ", ".join(VARIANTS)
        raise ValueError(f"Unknown variant {variant_id!r}; choose one of: {known}.") from None


def continue_variant(available: Sequence[str]) -> str:
    """Which variant continues a take from its last frame: the first available one that takes
    an image, preferring the variant table's order (the image-to-video expert pair first)."""
    for spec in VARIANTS.values():
        if spec.continues_takes and spec.id in available:
            return spec.id
    return next(spec.id for spec in VARIANTS.values() if spec.continues_takes)
