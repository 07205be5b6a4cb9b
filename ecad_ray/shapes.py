"""Procedural captioned images: one or two coloured shapes on a plain or textured background.

The demo model is trained on this data and judged against it, so every quality number the
project reports for `--model demo` means something: a caption such as "a small red circle above
a blue square" has one checkable answer. Everything is deterministic from a seed.

A `Scene` is the ground truth of one image (objects, their arrangement, background); its
caption mentions sizes and the background only some of the time (as real captions do).
`parse_caption` reads a caption of this grammar back into what it asks for, which is how
generated images are scored. The train/val split is by caption: a caption string lands in
val when a hash of it says so, so val captions are never seen in training.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

IMAGE_SIZE = 32
_SUPERSAMPLE = 4  # shapes are drawn at 4x and averaged down, for anti-aliased edges

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (225, 35, 35),
    "green": (40, 175, 55),
    "blue": (45, 85, 240),
    "yellow": (240, 215, 35),
    "purple": (155, 60, 215),
    "white": (240, 240, 240),
}
SHAPES = ("circle", "square", "triangle", "cross")
SIZES = ("small", "large")
BACKGROUNDS = ("plain", "striped", "dotted")
RELATIONS = ("above", "below", "left of", "right of")
LAYOUTS = ("single", "vertical", "horizontal")  # how the judge sees an arrangement
COLOUR_NAMES = tuple(COLOURS)
VAL_FRACTION = 0.1
HELDOUT_PROMPTS = Path(__file__).resolve().parents[1] / "prompts" / "demo_heldout.txt"  # never trained on


@dataclass(frozen=True)
class Obj:
    """One drawn shape: what it is and how big."""

    colour: str
    shape: str
    size: str


@dataclass(frozen=True)
class Scene:
    """Ground truth of one image. `relation` says where objects[0] is relative to objects[1]."""

    objects: tuple[Obj, ...]
    relation: str | None
    background: str
    say_size: tuple[bool, ...]  # per object: does the caption name its size
    say_background: bool

    @property
    def caption(self) -> str:
        """The caption of this scene ("a small red circle above a blue square")."""
        parts = []
        for obj, say in zip(self.objects, self.say_size):
            size = f"{obj.size} " if say else ""
            parts.append(f"a {size}{obj.colour} {obj.shape}")
        text = f" {self.relation} ".join(parts)
        if self.say_background:
            text += f" on a {self.background} background"
        return text

    @property
    def layout(self) -> str:
        """`single`, `vertical` (above/below) or `horizontal` (left/right of)."""
        if self.relation is None:
            return "single"
        return "vertical" if self.relation in ("above", "below") else "horizontal"

    def slots(self) -> tuple[Obj, ...]:
        """Objects in reading order of the image: top then bottom, or left then right."""
        if self.relation in ("below", "right of"):
            return (self.objects[1], self.objects[0])
        return self.objects


@dataclass(frozen=True)
class CaptionSpec:
    """What a caption asks for; `None` fields were not mentioned."""

    objects: tuple[Obj | None, ...]  # size may be None inside (see `sizes`)
    sizes: tuple[str | None, ...]
    relation: str | None
    background: str | None

    @property
    def layout(self) -> str:
        """The arrangement the caption asks for, in the judge's terms."""
        if self.relation is None:
            return "single"
        return "vertical" if self.relation in ("above", "below") else "horizontal"

    def slots(self) -> tuple[int, ...]:
        """Indices of the caption's objects in image reading order (top/left first)."""
        if self.relation in ("below", "right of"):
            return (1, 0)
        return tuple(range(len(self.objects)))


_OBJ = r"an? (?:(small|large) )?(" + "|".join(COLOURS) + r") (" + "|".join(SHAPES) + r")"
_CAPTION = re.compile(
    rf"^{_OBJ}(?: ({'|'.join(RELATIONS)}) {_OBJ})?(?: on an? ({'|'.join(BACKGROUNDS)}) background)?$"
)


def parse_caption(text: str) -> CaptionSpec | None:
    """Read a caption of the demo grammar; `None` when it does not follow the grammar."""
    match = _CAPTION.match(" ".join(text.lower().replace(".", " ").split()))
    if match is None:
        return None
    size1, colour1, shape1, relation, size2, colour2, shape2, background = match.groups()
    objects = [Obj(colour1, shape1, size1 or "")]
    sizes = [size1]
    if relation is not None:
        objects.append(Obj(colour2, shape2, size2 or ""))
        sizes.append(size2)
    return CaptionSpec(tuple(objects), tuple(sizes), relation, background)


def is_val_caption(caption: str) -> bool:
    """True for the ~10% of captions held out of training (stable hash of the text)."""
    digest = hashlib.sha256(caption.encode()).digest()
    return int.from_bytes(digest[:4], "little") / 2**32 < VAL_FRACTION


def random_scene(rng: np.random.Generator) -> Scene:
    """Draw one scene: 40% one shape, 60% two shapes; sizes/background named sometimes."""
    n = 1 if rng.random() < 0.4 else 2
    objects = tuple(
        Obj(str(rng.choice(COLOUR_NAMES)), str(rng.choice(SHAPES)), str(rng.choice(SIZES)))
        for _ in range(n)
    )
    relation = str(rng.choice(RELATIONS)) if n == 2 else None
    return Scene(
        objects=objects,
        relation=relation,
        background=str(rng.choice(BACKGROUNDS)),
        say_size=tuple(bool(rng.random() < 0.5) for _ in range(n)),
        say_background=bool(rng.random() < 0.3),
    )


def sample_scenes(n: int, seed: int, split: str = "train") -> list[Scene]:
    """`n` scenes whose captions fall in `split` ("train" or "val"), deterministic from `seed`."""
    if split not in ("train", "val"):
        raise ValueError(f"split must be train or val, not {split!r}")
    rng = np.random.default_rng(seed)
    want_val = split == "val"
    scenes: list[Scene] = []
    while len(scenes) < n:
        scene = random_scene(rng)
        if is_val_caption(scene.caption) == want_val:
            scenes.append(scene)
    return scenes


def scene_for_caption(caption: str, rng: np.random.Generator) -> Scene:
    """A scene that matches `caption`; unnamed sizes and background are drawn at random."""
    spec = parse_caption(caption)
    if spec is None:
        raise ValueError(f"caption does not follow the demo grammar: {caption!r}")
    objects = tuple(
        Obj(o.colour, o.shape, s or str(rng.choice(SIZES))) for o, s in zip(spec.objects, spec.sizes)
    )
    return Scene(
        objects=objects,
        relation=spec.relation,
        background=spec.background or str(rng.choice(BACKGROUNDS)),
        say_size=tuple(s is not None for s in spec.sizes),
        say_background=spec.background is not None,
    )


# ---------------------------------------------------------------------------------------
# Rendering


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    coords = (np.arange(size * _SUPERSAMPLE) + 0.5) / _SUPERSAMPLE
    return np.meshgrid(coords, coords, indexing="xy")  # x_HW, y_HW in pixel units


def _shape_mask(shape: str, cx: float, cy: float, r: float, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Boolean mask of a shape centred at (cx, cy) with nominal radius r (pixels)."""
    dx, dy = x - cx, y - cy
    if shape == "circle":
        return dx**2 + dy**2 <= r**2
    if shape == "square":
        h = 0.85 * r
        return (np.abs(dx) <= h) & (np.abs(dy) <= h)
    if shape == "triangle":  # pointing up, base at cy + 0.75r, apex at cy - r
        top, base = -r, 0.8 * r
        t = (dy - top) / (base - top)  # 0 at apex, 1 at base
        return (t >= 0) & (t <= 1) & (np.abs(dx) <= t * 1.05 * r)
    if shape == "cross":
        arm, half = r, 0.32 * r
        return ((np.abs(dx) <= arm) & (np.abs(dy) <= half)) | ((np.abs(dy) <= arm) & (np.abs(dx) <= half))
    raise ValueError(f"unknown shape {shape!r}")


def _background(kind: str, rng: np.random.Generator, size: int) -> np.ndarray:
    """A dark-to-mid grey background (float HxWx3), plain, striped or dotted."""
    base = rng.uniform(25, 105) + rng.uniform(-8, 8, size=3)
    img = np.broadcast_to(base, (size, size, 3)).copy()
    yy, xx = np.mgrid[0:size, 0:size]
    delta = rng.choice([-1.0, 1.0]) * rng.uniform(25, 40)
    if kind == "striped":
        period = int(rng.integers(4, 7))
        direction = int(rng.integers(0, 3))
        coord = (yy, xx, xx + yy)[direction]
        img[(coord // (period // 2)) % 2 == 1] += delta
    elif kind == "dotted":
        period = int(rng.integers(4, 7))
        ox, oy = rng.integers(0, period, size=2)
        img[((xx + ox) % period == 0) & ((yy + oy) % period == 0)] += abs(delta) + 10
    return img


def _placements(scene: Scene, rng: np.random.Generator, size: int) -> list[tuple[float, float, float]]:
    """(cx, cy, r) per object: one anywhere, or two in separate halves along the relation axis.

    Radii are in pixels at 32 px. Small shapes stay at least ~9 px across: at radius 3.5 (7 px)
    the demo model's 16x16 latent blurred a cross's 2 px arms into a blob, so its shape could
    not be learned in the CPU training budget (large shapes were drawn right almost always).
    """
    half = size / 2
    if scene.relation is None:
        obj = scene.objects[0]
        r = rng.uniform(4.8, 5.8) if obj.size == "small" else rng.uniform(8.5, 11.5)
        cx, cy = rng.uniform(r + 1, size - r - 1, size=2)
        return [(cx, cy, r)]
    radii = [rng.uniform(4.5, 5.2) if o.size == "small" else rng.uniform(6.2, 7.3) for o in scene.slots()]
    spots = []
    for i, r in enumerate(radii):
        along = rng.uniform(i * half + r + 0.5, (i + 1) * half - r - 0.5)  # own half
        across = float(np.clip(half + rng.uniform(-5, 5), r + 1, size - r - 1))
        spots.append((across, along, r) if scene.layout == "vertical" else (along, across, r))
    slot_of = (1, 0) if scene.relation in ("below", "right of") else (0, 1)
    return [spots[slot_of[i]] for i in range(2)]


def render(scene: Scene, rng: np.random.Generator, size: int = IMAGE_SIZE) -> np.ndarray:
    """Draw a scene as an HxWx3 uint8 image."""
    x, y = _grid(size)
    img = _background(scene.background, rng, size)
    for obj, (cx, cy, r) in zip(scene.objects, _placements(scene, rng, size)):
        mask = _shape_mask(obj.shape, cx, cy, r, x, y).astype(np.float32)
        cover = mask.reshape(size, _SUPERSAMPLE, size, _SUPERSAMPLE).mean(axis=(1, 3))[..., None]
        colour = np.asarray(COLOURS[obj.colour], dtype=np.float64) + rng.uniform(-12, 12, size=3)
        img = img * (1 - cover) + colour * cover
    img += rng.normal(0, 2.0, size=img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class ShapeData:
    """A batch of rendered scenes: images_NHWC (uint8), their scenes and captions."""

    images: np.ndarray
    scenes: list[Scene]

    @property
    def captions(self) -> list[str]:
        """Caption of each image."""
        return [s.caption for s in self.scenes]


def make_dataset(n: int, seed: int, split: str = "train", size: int = IMAGE_SIZE) -> ShapeData:
    """`n` captioned images from `split`, identical for the same (n, seed, split, size)."""
    scenes = sample_scenes(n, seed, split)
    rng = np.random.default_rng([seed, 1 if split == "val" else 0])
    images = np.stack([render(s, rng, size) for s in scenes]) if scenes else np.zeros((0, size, size, 3), np.uint8)
    return ShapeData(images, scenes)


def render_captions(captions: list[str], seed: int, size: int = IMAGE_SIZE) -> ShapeData:
    """Real images drawn for given captions (reference images for FID and for tests)."""
    rng = np.random.default_rng(seed)
    scenes = [scene_for_caption(c, rng) for c in captions]
    images = np.stack([render(s, rng, size) for s in scenes])
    return ShapeData(images, scenes)


def heldout_captions(limit: int | None = None) -> list[str]:
    """The demo's held-out captions (`prompts/demo_heldout.txt`), wherever the caller runs from."""
    lines = [x for x in HELDOUT_PROMPTS.read_text().splitlines() if x]
    return lines if limit is None else lines[:limit]
