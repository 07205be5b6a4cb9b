"""Peers' `--method` specs parse, bad ones are one line, and each diffusers cache attaches to the demo."""

import numpy as np
import pytest
import torch

from ecad_ray.errors import UserError
from ecad_ray.peers import apply_method, parse_method


def test_specs_parse():
    assert parse_method("pab:skip=2").options == {"skip": 2}
    assert parse_method("pab:skip=3,range=0-900").options == {"skip": 3, "range": (0, 900)}
    assert parse_method("fbc:threshold=0.1").options == {"threshold": 0.1}
    assert parse_method("cache-dit:F1B0,R0.12").options == {"F": 1, "B": 0, "R": 0.12, "T": 0}
    assert parse_method("cache-dit:F8B0,R0.08,T1").options["T"] == 1
    assert parse_method("pab:skip=2").name == "pab_skip-2"


@pytest.mark.parametrize("spec, message", [
    ("tea:x=1", "unknown method 'tea'"),
    ("pab:skp=2", "'skp=2' is not an option of pab"),
    ("pab:skip=two", "skip=two is not a valid int"),
    ("fbc:threshold=-1", "threshold must be positive"),
    ("pab:range=5", "not a valid LOW-HIGH range"),
    ("cache-dit:F1X0", "expected cache-dit:F<n>B<m>"),
])
def test_bad_specs_are_one_line(spec, message):
    with pytest.raises(UserError, match=message) as err:
        parse_method(spec)
    assert str(err.value).startswith(f"--method {spec}:") and "\n" not in str(err.value)


def _images(pipe):
    out = pipe(prompt=["a red circle above a blue square"] * 2, num_inference_steps=8, height=32, width=32,
               generator=torch.Generator().manual_seed(0), output_type="np", use_resolution_binning=False)
    return out.images


@pytest.mark.slow  # three demo pipelines x three 8-step runs: minutes on the loaded 2-core box
@pytest.mark.parametrize("spec", ["pab:skip=2,range=0-1000", "fbc:threshold=0.2", "faster:skip=2"])
def test_diffusers_caches_attach_to_pixart_and_come_off(spec):
    from ecad_ray.models.demo import build_pipeline

    pipe = build_pipeline()
    pipe.set_progress_bar_config(disable=True)
    reference = _images(pipe)
    remove = apply_method(pipe, parse_method(spec), 8)
    cached = _images(pipe)
    assert not np.array_equal(cached, reference)  # it did change the computation
    assert np.abs(cached - reference).mean() < 0.2  # ... without wrecking the image
    remove()
    assert np.array_equal(_images(pipe), reference)


def test_cache_dit_absent_is_one_line():
    try:
        import cache_dit  # noqa: F401
        pytest.skip("cache-dit is installed")
    except ImportError:
        pass
    with pytest.raises(UserError, match="cache-dit is not installed"):
        apply_method(object(), parse_method("cache-dit:F1B0,R0.12"), 20)
