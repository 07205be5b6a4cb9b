"""The judge: a small CNN that reads a 32×32 shapes image back into its caption's attributes.

Two jobs. (1) Caption fidelity: for an image generated from a demo caption, did it draw the
right colours, shapes and arrangement? (`score`). (2) Feature extractor for the demo FID:
Inception features mean little on 32×32 toy shapes, so FID for `--model demo` is computed
on the judge's penultimate layer (`features`, or `clean_fid_extractor` for clean-fid's
`custom_feat_extractor`).

The judge reads an image in reading order: for two shapes, slot 0 is the top (vertical
layout) or left (horizontal) one. A caption is compared slot by slot; colour and shape
accuracy take the better of the two slot assignments (did it draw the right things?) and
position accuracy asks whether the arrangement and order are right (where?).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ecad_ray.errors import UserError
from ecad_ray.shapes import BACKGROUNDS, COLOUR_NAMES, LAYOUTS, SHAPES, SIZES, Scene, parse_caption

JUDGE_PATH = Path(__file__).with_name("models") / "demo_assets" / "judge.safetensors"
NONE = "none"  # slot 1 of a one-shape image

# Every head: its name and its classes (slot 1 has an extra "none" class).
HEADS: dict[str, tuple[str, ...]] = {
    "layout": LAYOUTS,
    "colour0": COLOUR_NAMES,
    "shape0": SHAPES,
    "size0": SIZES,
    "colour1": COLOUR_NAMES + (NONE,),
    "shape1": SHAPES + (NONE,),
    "size1": SIZES + (NONE,),
    "background": BACKGROUNDS,
}


@dataclass(frozen=True)
class JudgeConfig:
    """Judge size; small enough to train in a couple of minutes on a CPU."""

    width: int = 16  # channels of the first conv stage (doubles at each of three stages)
    feature_dim: int = 256  # penultimate layer: the FID feature vector


class Judge(nn.Module):
    """Three conv stages, a flattening (keeps where things are) and one linear head per attribute."""

    def __init__(self, config: JudgeConfig = JudgeConfig()):
        super().__init__()
        w = config.width

        def stage(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(),
                nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(),
                nn.MaxPool2d(2),
            )

        self.body = nn.Sequential(stage(3, w), stage(w, 2 * w), stage(2 * w, 4 * w))  # 32 -> 4
        self.neck = nn.Sequential(nn.Flatten(), nn.Linear(4 * w * 16, config.feature_dim), nn.ReLU())
        self.heads = nn.ModuleDict({k: nn.Linear(config.feature_dim, len(v)) for k, v in HEADS.items()})

    def features(self, x_NCHW: torch.Tensor) -> torch.Tensor:
        """Penultimate features of images scaled to [-1, 1]."""
        return self.neck(self.body(x_NCHW))

    def forward(self, x_NCHW: torch.Tensor) -> dict[str, torch.Tensor]:
        """Logits per head."""
        f = self.features(x_NCHW)
        return {k: head(f) for k, head in self.heads.items()}


def to_input(images_NHWC: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 NHWC images -> float NCHW in [-1, 1]."""
    x = torch.as_tensor(np.asarray(images_NHWC)).permute(0, 3, 1, 2).float()
    return x / 127.5 - 1.0


def scene_labels(scenes: list[Scene]) -> dict[str, torch.Tensor]:
    """Class index per head for each scene (the judge's training targets)."""
    rows: dict[str, list[int]] = {k: [] for k in HEADS}
    for s in scenes:
        slots = s.slots()
        rows["layout"].append(LAYOUTS.index(s.layout))
        rows["background"].append(BACKGROUNDS.index(s.background))
        for i in range(2):
            obj = slots[i] if i < len(slots) else None
            for attr in ("colour", "shape", "size"):
                classes = HEADS[f"{attr}{i}"]
                rows[f"{attr}{i}"].append(classes.index(getattr(obj, attr) if obj else NONE))
    return {k: torch.tensor(v) for k, v in rows.items()}


def _augment(x_NCHW: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Mild blur and noise so the judge also reads the softer images a VAE decodes."""
    n = x_NCHW.shape[0]
    kernel = torch.tensor([1.0, 2.0, 1.0])
    kernel = (kernel[:, None] * kernel[None, :]) / 16
    blurred = nn.functional.conv2d(
        nn.functional.pad(x_NCHW, (1, 1, 1, 1), mode="replicate"),
        kernel.expand(3, 1, 3, 3), groups=3,
    )
    pick = (torch.rand(n, 1, 1, 1, generator=gen) < 0.5).float()
    x = pick * blurred + (1 - pick) * x_NCHW
    return x + 0.03 * torch.randn(x.shape, generator=gen)


def train_judge(images_NHWC: np.ndarray, scenes: list[Scene], *, epochs: int = 3, batch: int = 128,
                lr: float = 2e-3, seed: int = 0, log=print) -> Judge:
    """Train a judge on rendered scenes (deterministic for a seed)."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    judge = Judge()
    x_all = to_input(images_NHWC)
    y_all = scene_labels(scenes)
    batch = min(batch, len(x_all))
    steps = epochs * (len(x_all) // batch)
    opt = torch.optim.AdamW(judge.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    judge.train()
    step = 0
    for epoch in range(epochs):
        order = torch.randperm(len(x_all), generator=gen)
        for start in range(0, len(order) - batch + 1, batch):
            idx = order[start:start + batch]
            logits = judge(_augment(x_all[idx], gen))
            loss = sum(nn.functional.cross_entropy(logits[k], y_all[k][idx]) for k in HEADS)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            if step % 100 == 0:
                log(f"judge step {step}/{steps} loss {loss.item():.3f}")
    return judge.eval()


def save_judge(judge: Judge, path: Path) -> None:
    """Write judge weights as safetensors (atomic)."""
    from safetensors.torch import save_file

    tmp = Path(path).with_suffix(".tmp")
    state = {k: v.detach().contiguous() for k, v in judge.state_dict().items()}
    save_file(state, str(tmp), metadata={"model": "demo-judge"})
    tmp.replace(path)


@lru_cache(maxsize=4)
def load_judge(path: Path = JUDGE_PATH) -> Judge:
    """The trained judge (cached); `UserError` when the weights file is absent."""
    from safetensors.torch import load_file

    if not Path(path).is_file():
        raise UserError(f"{path}: demo judge weights missing; run `ecad-ray demo train` to make them")
    judge = Judge()
    judge.load_state_dict(load_file(str(path)))
    return judge.eval()


@torch.no_grad()
def predict(images_NHWC: np.ndarray, judge: Judge | None = None, batch: int = 256) -> dict[str, list[str]]:
    """The judge's reading of each image: class name per head."""
    judge = judge or load_judge()
    out: dict[str, list[str]] = {k: [] for k in HEADS}
    for start in range(0, len(images_NHWC), batch):
        logits = judge(to_input(images_NHWC[start:start + batch]))
        for k, classes in HEADS.items():
            out[k].extend(classes[i] for i in logits[k].argmax(1).tolist())
    return out


@torch.no_grad()
def features(images_NHWC: np.ndarray, judge: Judge | None = None, batch: int = 256) -> np.ndarray:
    """Judge features (N x 256 float64) of uint8 NHWC 32×32 images: the demo's FID space."""
    judge = judge or load_judge()
    parts = [judge.features(to_input(images_NHWC[s:s + batch])) for s in range(0, len(images_NHWC), batch)]
    return torch.cat(parts).double().numpy() if parts else np.zeros((0, JudgeConfig().feature_dim))


def clean_fid_extractor(judge: Judge | None = None):
    """A callable for clean-fid's `custom_feat_extractor`: float NCHW 0..255 (any size) -> features."""
    judge = judge or load_judge()

    @torch.no_grad()
    def extract(x_NCHW: torch.Tensor) -> torch.Tensor:
        x = x_NCHW.float().cpu()
        if x.shape[-1] != 32 or x.shape[-2] != 32:
            x = nn.functional.interpolate(x, size=(32, 32), mode="area")
        return judge.features(x / 127.5 - 1.0)

    return extract


def frechet_distance(feats_a: np.ndarray, feats_b: np.ndarray) -> float:
    """FID between two feature sets (clean-fid's Fréchet distance on their means/covariances)."""
    import warnings

    from cleanfid.fid import frechet_distance as fd

    with warnings.catch_warnings():  # few images -> singular covariances; the value is still defined
        warnings.simplefilter("ignore")
        return float(fd(feats_a.mean(0), np.cov(feats_a, rowvar=False), feats_b.mean(0), np.cov(feats_b, rowvar=False)))


@dataclass(frozen=True)
class Fidelity:
    """Caption-fidelity accuracies (fractions); `n_*` count what each is averaged over."""

    colour: float
    shape: float
    position: float
    size: float
    n_images: int
    n_objects: int
    n_pairs: int
    n_sizes: int
    n_skipped: int  # prompts outside the demo grammar


def _slot_matches(spec, reading: dict[str, str], assign: tuple[int, ...], attr: str) -> list[bool]:
    """Per caption object: does the judge's slot `assign[i]` show the caption's `attr`?"""
    return [reading[f"{attr}{slot}"] == getattr(obj, attr) for obj, slot in zip(spec.objects, assign)]


def score(captions: list[str], images_NHWC: np.ndarray, judge: Judge | None = None) -> Fidelity:
    """Colour, shape, position (and named size) accuracy of images against their captions."""
    if len(captions) != len(images_NHWC):
        raise ValueError("one caption per image")
    pred = predict(images_NHWC, judge)
    colour, shape, position, size = [], [], [], []
    skipped = 0
    for i, caption in enumerate(captions):
        spec = parse_caption(caption)
        if spec is None:
            skipped += 1
            continue
        reading = {k: v[i] for k, v in pred.items()}
        wanted = spec.slots()  # caption object -> slot where it should be
        if len(spec.objects) == 1:
            best = wanted
        else:
            swapped = tuple(1 - s for s in wanted)
            hits = {
                a: sum(_slot_matches(spec, reading, a, "colour")) + sum(_slot_matches(spec, reading, a, "shape"))
                for a in (wanted, swapped)
            }
            best = wanted if hits[wanted] >= hits[swapped] else swapped
            position.append(reading["layout"] == spec.layout and best == wanted)
        colour += _slot_matches(spec, reading, best, "colour")
        shape += _slot_matches(spec, reading, best, "shape")
        size += [reading[f"size{slot}"] == s for s, slot in zip(spec.sizes, best) if s is not None]

    def mean(xs: list[bool]) -> float:
        return float(np.mean(xs)) if xs else float("nan")

    return Fidelity(mean(colour), mean(shape), mean(position), mean(size),
                    len(captions) - skipped, len(colour), len(position), len(size), skipped)
