"""The trained demo model: training path == pipeline path, shipped weights, and the quality gate."""

import numpy as np
import pytest
import torch

from ecad_ray.models.demo import (
    ASSETS,
    WEIGHTS_PATH,
    build_components,
    build_pipeline,
    demo_config,
    encode_captions,
    load_weights,
    sample_images,
    save_weights,
)
from ecad_ray.shapes import heldout_captions

SHAPE_FLOOR = 0.6  # chance is 0.25; the shipped weights measure 0.727 here, the previous ones 0.545
HELDOUT = heldout_captions()


def test_training_embeddings_are_the_pipelines_embeddings():
    pipe = build_pipeline(weights=None)
    captions = ["A small red circle above a blue square ", "a large white cross"]
    emb, mask = encode_captions(pipe.tokenizer, pipe.text_encoder, captions + [""], demo_config()["max_sequence_length"])
    pe, pm, ne, nm = pipe.encode_prompt(captions, negative_prompt="", clean_caption=False,
                                        max_sequence_length=demo_config()["max_sequence_length"])
    torch.testing.assert_close(emb[:2], pe)
    assert torch.equal(mask[:2], pm)
    torch.testing.assert_close(emb[2:].expand_as(ne), ne)
    assert torch.equal(mask[2:].expand_as(nm), nm)
    assert mask[0].sum() == 9  # 8 words + </s>: every caption word is in the vocabulary


def test_save_then_load_round_trips(tmp_path):
    a = build_components(weights=None)
    with torch.no_grad():
        for p in a["transformer"].parameters():
            p.add_(0.01)
    save_weights(a, tmp_path / "w.safetensors")
    b = build_components(weights=None)
    load_weights(b, tmp_path / "w.safetensors")
    for name in ("text_encoder", "vae", "transformer"):
        for (k, va), vb in zip(a[name].state_dict().items(), b[name].state_dict().values()):
            assert torch.equal(va, vb), f"{name}.{k}"


def test_shipped_weights_fit_the_budget():
    total = sum(p.stat().st_size for p in (WEIGHTS_PATH, ASSETS / "judge.safetensors"))
    assert total <= 20 * 2**20


def test_vae_reconstructs_shapes_and_latents_are_unit_scale():
    from ecad_ray.shapes import make_dataset

    vae = build_components()["vae"]
    images = make_dataset(64, seed=5, split="val").images
    x = torch.as_tensor(images).permute(0, 3, 1, 2).float() / 127.5 - 1
    with torch.no_grad():
        z = vae.encode(x).latent_dist.mean
        recon = vae.decode(z / vae.config.scaling_factor).sample
    assert 0.5 < float(z.std()) < 2.0
    assert float((recon - x).abs().mean()) < 0.1  # ~13 grey levels; an untrained VAE is ~0.5


def _gate(n: int, seed: int, seeds: int = 1):
    from ecad_ray.judge import score

    captions = HELDOUT[:n] * seeds
    images = sample_images(build_pipeline(), captions, seed=seed, batch_size=32)
    return score(captions, images)


def test_model_meets_the_colour_gate_and_draws_shapes_above_chance():
    """32 held-out captions (fixed seeds, CPU, quick): colour meets the issue's 80% gate and shape
    is far above chance (25%); the 70% shape gate is `test_quality_gate_full` (256 images).

    Measured on the shipped weights: colour 89.1%, shape 72.7%.
    """
    fid = _gate(32, seed=0)
    assert fid.colour >= 0.8, fid
    assert fid.shape >= SHAPE_FLOOR, fid


@pytest.mark.slow
def test_quality_gate_full():
    """The issue's gate on the README's sample (benchmarks/demo_quality.py: 64 held-out captions
    x 4 seeds): >= 80% colour and >= 70% shape accuracy by the judge.

    Measured on the shipped weights: colour 83.8%, shape 71.1%. The margin is thin: one 64-image
    draw (seed 100) reads 85.1% / 69.3%, so the gate is judged on 256 images, not 64.
    """
    fid = _gate(len(HELDOUT), seed=1000, seeds=4)
    assert fid.colour >= 0.8 and fid.shape >= 0.7, fid


def test_sampling_is_deterministic_and_batch_independent():
    pipe = build_pipeline()
    a = sample_images(pipe, HELDOUT[:3], seed=1, batch_size=3)
    b = sample_images(pipe, HELDOUT[:3], seed=1, batch_size=2)
    assert a.shape == (3, 32, 32, 3) and a.dtype == np.uint8
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 1


def test_tiny_training_run_writes_loadable_weights(tmp_path):
    from ecad_ray.models.demo_train import TrainConfig, train_demo

    cfg = TrainConfig(n_train=96, judge_epochs=1, judge_images=96, vae_steps=3, dit_steps=4, dit_batch=8,
                      vae_batch=8, checkpoint_every=2, threads=1)
    timings = train_demo(tmp_path, cfg, log=lambda m: None)
    assert set(timings) == {"data", "judge", "vae", "denoiser"}
    pipe = build_pipeline(weights=tmp_path / "weights.safetensors")
    images = sample_images(pipe, ["a red circle"], steps=2)
    assert images.shape == (1, 32, 32, 3)


@pytest.mark.slow
def test_fora_every_2_keeps_attribute_accuracy_within_5_points():
    """Caching behaves as on real DiTs: recompute-every-2 costs little accuracy on the demo."""
    from ecad_ray.caching import apply_schedule
    from ecad_ray.caching.baselines import fora_schedule
    from ecad_ray.caching.spec import spec_from_transformer
    from ecad_ray.judge import score

    cfg = demo_config()
    pipe = build_pipeline()
    captions = HELDOUT * 2  # 128 images: at 32 one object is ~2 points, too coarse for a 5-point bound
    full = score(captions, sample_images(pipe, captions, seed=500, batch_size=32))
    spec = spec_from_transformer(pipe.transformer, cfg["image_size"], cfg["image_size"], cfg["max_sequence_length"])
    handle = apply_schedule(pipe, fora_schedule(spec, cfg["num_inference_steps"], 2))
    try:
        cached = score(captions, sample_images(pipe, captions, seed=500, batch_size=32))
        assert handle.stats.reused > 0
    finally:
        handle.remove()
    assert abs(cached.colour - full.colour) <= 0.05 and abs(cached.shape - full.shape) <= 0.05, (full, cached)
