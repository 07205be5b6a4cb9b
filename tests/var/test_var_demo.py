"""The shipped text-to-image demo VAR: shapes captions in, the judge reads the captions back.

The target (issue 16) is: on held-out captions (never trained on), unpruned, colour >= 80% and
shape >= 70%. The shipped model reaches colour 0.73 and shape 0.52 on every held-out caption
with four seeds; its 8x8-token tokenizer caps what any transformer can show at colour 0.985,
shape 0.767 (the judge on tokenized-then-decoded renders, recorded in the file). The fast test
holds the model to what it does on a small sample, far above chance (colour 1/6, shape 1/4);
the slow test states the target and is a strict xfail until a model reaches it.
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


def test_quality_gate_small_sample():
    captions = heldout_captions()[:32]
    fid = _accuracy(captions, list(range(len(captions))))
    assert fid.n_images == 32
    assert fid.colour >= 0.65 and fid.shape >= 0.35, fid  # measured 0.76, 0.42


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="measured colour 0.73, shape 0.52: below the 0.80 / 0.70 target (issue 16)")
def test_quality_gate_full():
    captions = [c for c in heldout_captions() for _ in range(4)]
    fid = _accuracy(captions, list(range(len(captions))))
    assert fid.colour >= 0.80 and fid.shape >= 0.70, fid
