"""`ecad-ray dataset check OUT...`: is a generated dataset complete, and is it any good?

Complete: images per class on disk vs the target the ledger recorded. Good: on the `shapes`
class set (the demo's colour x shape classes), "train on generated, test on real": a small CNN
trained on the generated images (32 px, a few epochs on the CPU) is scored on real images
drawn by `ecad_ray.shapes` for the same classes, which the generated set never saw. Given several
output folders (one per prompt strategy), each gets its own figure, side by side.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ecad_ray.dataset.ledger import open_ledger
from ecad_ray.dataset.status import ClassProgress, class_progress
from ecad_ray.errors import UserError

TRAIN_SIZE = 32  # the demo's image size: the classifier sees what the shapes renderer draws
REAL_PER_CLASS = 20  # real test images per class
REAL_SEED = 12345


@dataclass(frozen=True)
class DatasetCheck:
    """One output folder's counts and, on `shapes`, its train-on-generated accuracy."""

    output_dir: str
    strategy: str  # the prompt file's name without suffix (how its prompts were made)
    classes: list[ClassProgress]
    accuracy: float | None  # on real images; None when the class set has no real renderer
    real_images: int

    @property
    def complete(self) -> bool:
        return all(c.images >= c.target for c in self.classes)


def check_dataset(output_dir: str | Path, epochs: int = 8, seed: int = 0) -> DatasetCheck:
    """Counts per class, and on the shapes set the accuracy on real images of a classifier
    trained on the generated ones."""
    output_dir = Path(output_dir)
    ledger = open_ledger(output_dir)
    try:
        meta = ledger.meta()
    finally:
        ledger.close()
    classes, _ = class_progress(output_dir)
    strategy = Path(meta["prompts_file"]).stem
    accuracy, n_real = None, 0
    if meta["class_set"] == "shapes":
        from ecad_ray.dataset.generation import class_folder

        train = load_images(output_dir, [class_folder(c.class_name) for c in classes], meta["format"])
        real_x, real_y = real_shapes([c.class_name for c in classes])
        accuracy = train_and_score(*train, real_x, real_y, n_classes=len(classes), epochs=epochs, seed=seed)
        n_real = len(real_y)
    return DatasetCheck(str(output_dir), strategy, classes, accuracy, n_real)


def load_images(output_dir: Path, folders: list[str], fmt: str) -> tuple[np.ndarray, np.ndarray]:
    """Every image of each class folder at 32 px: (N, 32, 32, 3) uint8 and labels (N,)."""
    from PIL import Image

    xs, ys = [], []
    for label, folder in enumerate(folders):
        for path in sorted((output_dir / folder).glob(f"*.{fmt}")):
            if path.name.startswith("."):
                continue
            with Image.open(path) as img:
                xs.append(np.asarray(img.convert("RGB").resize((TRAIN_SIZE, TRAIN_SIZE), Image.BICUBIC)))
            ys.append(label)
    if not xs:
        raise UserError(f"{output_dir}: no generated images to train on")
    return np.stack(xs), np.asarray(ys)


def real_shapes(class_names: list[str], per_class: int = REAL_PER_CLASS, seed: int = REAL_SEED) -> tuple[np.ndarray, np.ndarray]:
    """Real test images of the shapes classes ("red circle": one red circle, any size and background)."""
    from ecad_ray.shapes import render_captions

    captions = [f"a {c}" for c in class_names for _ in range(per_class)]
    data = render_captions(captions, seed, TRAIN_SIZE)
    return data.images, np.repeat(np.arange(len(class_names)), per_class)


def train_and_score(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray,
                    n_classes: int, epochs: int = 8, seed: int = 0) -> float:
    """Train a small CNN on (train_x, train_y) on the CPU; its accuracy on (test_x, test_y)."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(64, n_classes),
    )
    x = torch.from_numpy(train_x).permute(0, 3, 1, 2).float() / 255.0
    y = torch.from_numpy(train_y).long()
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), 32):
            idx = order[i:i + 32]
            batch = x[idx]
            flip = torch.rand(len(idx), generator=gen) < 0.5  # left-right flips keep every shape's class
            batch = torch.where(flip[:, None, None, None], batch.flip(3), batch)
            loss = nn.functional.cross_entropy(net(batch), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        test = torch.from_numpy(test_x).permute(0, 3, 1, 2).float() / 255.0
        predicted = net(test).argmax(1).numpy()
    return float((predicted == test_y).mean())


def check_lines(checks: list[DatasetCheck]) -> list[str]:
    """What `dataset check` prints: counts per folder, then accuracy per prompt strategy."""
    lines = []
    for c in checks:
        short = [x for x in c.classes if x.images < x.target]
        total = sum(x.images for x in c.classes), sum(x.target for x in c.classes)
        lines.append(f"{c.output_dir} ({c.strategy}): {total[0]}/{total[1]} images, "
                     + ("every class complete" if not short else f"{len(short)} class(es) short"))
        for x in short:
            lines.append(f"  {x.class_name}: {x.images}/{x.target}")
    scored = [c for c in checks if c.accuracy is not None]
    if scored:
        lines.append("train on generated, test on real (shapes, 32 px CNN):")
        width = max(len(c.strategy) for c in scored)
        for c in scored:
            lines.append(f"  {c.strategy:<{width}}  accuracy {c.accuracy:.3f} on {c.real_images} real images "
                         f"({len(c.classes)} classes, chance {1 / len(c.classes):.3f})")
    return lines
