"""What a single-image run asks for, checked before any weights load.

`ImageOptions` mirrors the `ecad-ray image` options one to one. Everything that can be
judged without the model (size syntax, scheduler and dtype names, the output format) is
checked here so that a typo fails in a second, not after a multi-GB load.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from ecad_ray.errors import UserError

SCHEDULERS = ("auto", "dpm", "euler_a")
DTYPES = ("auto", "fp16", "bf16", "fp32")
SIZE_MULTIPLE = 8  # latent grids of SD/SDXL/PixArt need pixel sizes divisible by the VAE's 8
TURBO_STEPS, TURBO_CFG = 4, 0.0  # adversarially distilled models: few steps, no guidance
DEFAULT_STEPS, DEFAULT_CFG = 30, 7.5  # the seed tool's defaults for everything else

_SIZE = re.compile(r"^\s*(\d+)\s*[xX]\s*(\d+)\s*$")


@dataclass(frozen=True)
class ImageOptions:
    """One `ecad-ray image` request; `None` means "the model's default" (see `defaults`)."""

    model: str  # registry name (demo, pixart-alpha-256, ...), hub id or save_pretrained folder
    prompt: str
    negative_prompt: str | None = None
    out: Path = Path("image.png")  # format from the suffix (.png, .jpg, .webp, ...)
    steps: int | None = None  # None: Turbo 4, registry model its own, else 30
    cfg: float | None = None  # guidance scale; None: Turbo 0.0, registry its own, else 7.5
    size: str | None = None  # "WxH"; None: the model's native size
    seed: int = 42
    dtype: str = "auto"  # auto | fp16 | bf16 | fp32
    scheduler: str = "auto"  # auto keeps the model's own; dpm | euler_a clone its config
    attn_slicing: bool = False
    offload: bool = False  # model CPU offload (implies attention slicing)
    schedule: Path | None = None  # ECAD caching schedule (DiT models)

    def __post_init__(self) -> None:
        if not self.prompt.strip():
            raise UserError("--prompt: empty; give the text to draw")
        if self.scheduler not in SCHEDULERS:
            raise UserError(f"--scheduler {self.scheduler}: unknown; choose one of {', '.join(SCHEDULERS)}")
        if self.dtype not in DTYPES:
            raise UserError(f"--dtype {self.dtype}: unknown; choose one of {', '.join(DTYPES)}")
        if self.steps is not None and self.steps < 1:
            raise UserError(f"--steps {self.steps}: must be at least 1")
        if self.cfg is not None and self.cfg < 0:
            raise UserError(f"--cfg {self.cfg}: must be 0 or more")
        if self.size is not None:
            parse_size(self.size)
        image_format(self.out)
        if self.schedule is not None and not Path(self.schedule).is_file():
            raise UserError(f"--schedule {self.schedule}: no such file")


def parse_size(text: str) -> tuple[int, int, str | None]:
    """`"WxH"` -> (width, height, note); both rounded to multiples of 8, the note says when."""
    match = _SIZE.match(text)
    if not match or int(match[1]) == 0 or int(match[2]) == 0:
        raise UserError(f"--size {text}: expected WIDTHxHEIGHT in pixels, e.g. 512x768")
    width, height = int(match[1]), int(match[2])
    rounded_w, rounded_h = round_to_multiple(width), round_to_multiple(height)
    note = None
    if (rounded_w, rounded_h) != (width, height):
        note = (
            f"--size {width}x{height} rounded to {rounded_w}x{rounded_h} "
            f"(multiples of {SIZE_MULTIPLE})"
        )
    return rounded_w, rounded_h, note


def round_to_multiple(value: int, multiple: int = SIZE_MULTIPLE) -> int:
    """Nearest multiple (halves round up), never below one multiple."""
    return max(multiple, (value + multiple // 2) // multiple * multiple)


def image_format(out: Path) -> str:
    """PIL's format name for the output suffix, or a `UserError` naming --out."""
    suffix = Path(out).suffix.lower()
    fmt = Image.registered_extensions().get(suffix)
    if fmt is None or fmt not in Image.SAVE:
        raise UserError(f"--out {out}: unknown image format '{suffix}'; use .png, .jpg or .webp")
    return fmt
