"""The shipped text-to-image demo VAR: shapes captions in, the judge reads the captions back.

The target (issue 16) is: on held-out captions (never trained on), unpruned, colour >= 80% and
shape >= 70%. The shipped model reaches colour 0.868 and shape 0.708 on every held-out caption
with four seeds (456 objects: shape's standard error is about 0.02); its tokenizer shows
colour 1.00, shape 0.924 on tokenized-then-decoded renders (recorded in the file), the ceiling
the transformer works under. The fast test holds the model to what it does on a small sample,
far above chance (colour 1/6, shape 1/4); the slow test is the target itself.
"""

import pytest

from ecad_ray import judge
from ecad_ray.shapes import heldout_captions
from ecad_ray.var.checkpoints import DEMO_MODELS, load_var_model, training_notes


def _accuracy(captions, seeds):
    pipe = load_var_model("demo-var")
    out = pipe.generate(pipe.conditions(prompts=captions), seeds).images_B3HW
    images = (out.permute(0, 2, 3, 1) * 255).round().clamp(0, 255).byte().numpy()
    return judge.score(captions, images)


def test_shipped_demo_is_text_conditional_through_the_demo_t5():
    path = DEMO_MODELS["demo-var"]
    pipe = load_var_model("demo-var")
    v = pipe.config.var
    assert v.cond == "text" and v.text_encoder == "demo" and pipe.config.image_size == 32
    assert path.stat().st_size < 16 * 2**20  # a few MB of safetensors
    notes = training_notes(path)
    assert notes["train_config"]["data"] == "shapes" and notes["seconds_total"] > 0


def test_shipped_tokenizer_uses_its_codebook_and_can_show_the_shapes():
    """Dead-code re-seeding is what lifted the demo: the first tokenizer used 30 of its 512 codes
    at the finest scale and its reconstructions capped the judge's shape reading at 0.77."""
    import torch

    from ecad_ray.shapes import make_dataset

    pipe = load_var_model("demo-var")
    data = make_dataset(128, seed=4321, split="val")
    x = torch.from_numpy(data.images).permute(0, 3, 1, 2).float() / 127.5 - 1
    with torch.no_grad():
        idx = pipe.vqvae.img_to_idx(x)
        recon = pipe.vqvae.reconstruct(x)
    assert len(torch.unique(idx[-1])) >= 300  # of 512 on 128 images x 64 tokens: 486 (the first tokenizer: 27)
    images = ((recon + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    fid = judge.score(data.captions, images)
    assert fid.colour >= 0.95 and fid.shape >= 0.85, fid
    assert training_notes(DEMO_MODELS["demo-var"])["judge_on_reconstructions"]["shape"] >= 0.9


def test_quality_gate_small_sample():
    captions = heldout_captions()[:32]
    fid = _accuracy(captions, list(range(len(captions))))
    assert fid.n_images == 32
    assert fid.colour >= 0.75 and fid.shape >= 0.55, fid  # measured 0.800, 0.673


@pytest.mark.slow
def test_quality_gate_full():
    captions = [c for c in heldout_captions() for _ in range(4)]
    fid = _accuracy(captions, list(range(len(captions))))
    assert fid.colour >= 0.80 and fid.shape >= 0.70, fid
