"""`dataset generate` with two models: each class's images split by --model-share, each image
made by its row's model (the demo and a tiny FLUX pipeline saved to a folder, both offline)."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
from PIL import Image

from dataset_prompts import write_prompts
from tiny_models import tiny_flux_pipeline

CLASSES = ("red circle", "blue square")


def test_two_models_share_every_class(tmp_path):
    from actors.dataset_plan import run_dataset_generate
    from ecad_ray.dataset.generation import DatasetConfig

    flux = tmp_path / "flux"
    tiny_flux_pipeline(tmp_path / "tok").save_pretrained(flux)
    (tmp_path / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    out = tmp_path / "out"
    config = DatasetConfig(output_dir=str(out), prompts=str(write_prompts(tmp_path / "p.json", CLASSES)),
                           classes_file=str(tmp_path / "classes.txt"), images_per_class=4, models=("demo", str(flux)),
                           model_share=(0.75, 0.25), steps=2, size=32, batch_size=2, chunk_size=2, device="cpu")
    summary = run_dataset_generate(config)
    assert summary.new_images == 8
    rows = pq.read_table(out / "dataset.parquet").to_pylist()
    for cls in CLASSES:
        models = sorted(r["model"] for r in rows if r["class"] == cls)
        assert models == sorted(["demo"] * 3 + [str(flux)]), models
    for r in rows:
        assert Image.open(out / r["path"]).size == (32, 32)
    demo_img = [np.asarray(Image.open(out / r["path"])) for r in rows if r["model"] == "demo"]
    flux_img = [np.asarray(Image.open(out / r["path"])) for r in rows if r["model"] != "demo"]
    assert demo_img and flux_img and not any(np.array_equal(a, b) for a in demo_img for b in flux_img)
