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
    assert parse_method("taylorseer:interval=3,order=2").options == {"interval": 3, "order": 2}
    assert parse_method("mag:threshold=0.1,max_skip=4,retention=0.3").options == {
        "threshold": 0.1, "max_skip": 4, "retention": 0.3}


@pytest.mark.parametrize("spec, message", [
    ("tea:x=1", "unknown method 'tea'"),
    ("pab:skp=2", "'skp=2' is not an option of pab"),
    ("pab:skip=two", "skip=two is not a valid int"),
    ("fbc:threshold=-1", "threshold must be positive"),
    ("pab:range=5", "not a valid LOW-HIGH range"),
    ("cache-dit:F1X0", "expected cache-dit:F<n>B<m>"),
    ("taylorseer:interval=0", "interval must be positive"),
    ("taylorseer:cache_interval=3", "'cache_interval=3' is not an option of taylorseer"),
    ("mag:ratios=1", r"'ratios=1' is not an option of mag \(options: threshold=\.\.\., max_skip"),
    ("mag:max_skip=1.5", "max_skip=1.5 is not a valid int"),
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
@pytest.mark.parametrize("spec", ["pab:skip=2,range=0-1000", "fbc:threshold=0.2", "faster:skip=2",
                                  "taylorseer:interval=3", "mag:threshold=0.3"])
def test_diffusers_caches_attach_to_pixart_and_come_off(spec):
    from ecad_ray.models.demo import build_pipeline

    pipe = build_pipeline()
    pipe.set_progress_bar_config(disable=True)
    reference = _images(pipe)
    remove = apply_method(pipe, parse_method(spec), 8, calibrate=lambda: _images(pipe))
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


def test_magcache_calibrates_one_ratio_per_step_on_the_uncached_run(capsys):
    """diffusers' calibration mode, read back from its log line (its print is silenced)."""
    from ecad_ray.models.demo import build_pipeline
    from ecad_ray.peers import _mag_ratios

    pipe = build_pipeline()
    pipe.set_progress_bar_config(disable=True)
    runs = []

    def calibrate():
        runs.append(1)
        return pipe(prompt=["a small green triangle"], num_inference_steps=5, height=32, width=32,
                    output_type="latent", use_resolution_binning=False)

    ratios = _mag_ratios(pipe.transformer, 5, calibrate, parse_method("mag:threshold=0.1"), [])
    assert runs == [1] and len(ratios) == 5 and ratios[0] == 1.0 and all(r > 0 for r in ratios)
    assert "Calibration" not in capsys.readouterr().out
    with pytest.raises(UserError, match="needs an uncached calibration run"):
        _mag_ratios(pipe.transformer, 5, None, parse_method("mag:threshold=0.1"), [])
