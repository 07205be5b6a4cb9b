"""ECAD schedule files: every published one loads and round-trips; validation names key paths."""

import dataclasses
import json
from pathlib import Path

import pytest

from ecad_ray.caching import load_schedule, save_schedule, validate_schedule
from ecad_ray.caching.baselines import (
    BaselineParams,
    default_schedule,
    delta_dit_schedule,
    every_schedule,
    fora_schedule,
    tgate_schedule,
    write_baseline,
)
from ecad_ray.caching.spec import resolve_spec
from ecad_ray.errors import UserError

DEMO_LAST = resolve_spec("demo").num_blocks - 1  # the demo model's last block index

# where the project received ECAD's files: ../shared beside the checkout (developers and CI)
SHARED = Path(__file__).resolve().parents[3] / "shared" / "ecad-schedules"
REPO = Path(__file__).resolve().parents[2] / "schedules"
ECAD = REPO  # the repo's copy, same layout
FILES = sorted(REPO.rglob("*.json"))


def _model_for(path: Path) -> str:
    if "flux" in str(path):
        return "flux-dev"
    if "demo" in path.parts:
        return "demo"
    return "pixart-sigma-256" if "sigma" in path.name or "sigma_cache" in str(path) else "pixart-alpha-256"


def test_the_repo_ships_ecads_schedules_with_the_same_layout():
    ours = {p.relative_to(REPO) for p in REPO.rglob("*.json")}
    assert len([p for p in ours if p.parts[0] != "demo"]) == 66
    assert any(p.parts[0] == "demo" for p in ours)


@pytest.mark.skipif(not SHARED.is_dir(), reason="ECAD's original files sit beside the checkout only on project machines")
def test_the_repo_copy_equals_ecads_originals():
    for path in SHARED.rglob("*.json"):
        assert json.loads((REPO / path.relative_to(SHARED)).read_text()) == json.loads(path.read_text())


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(p.parents[2])))
def test_every_schedule_loads_round_trips_and_validates(path, tmp_path):
    original = json.loads(path.read_text())
    schedule = load_schedule(path)
    out = save_schedule(schedule, tmp_path / "copy.json")
    assert json.loads(out.read_text()) == original
    assert load_schedule(out) == schedule
    validate_schedule(schedule, _model_for(path), source=str(path))


def _edited(tmp_path, edit, source="schedules/demo/default.json"):
    data = json.loads((REPO.parent / source).read_text())
    edit(data)
    path = tmp_path / "x.json"
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize("edit,message", [
    (lambda d: d["cache_schedule"]["schedule"]["003"]["2"].update(attn3=True),
     'x.json: step "003" block "2": unknown component "attn3" (expected attn1, attn2, ff)'),
    (lambda d: d["cache_schedule"]["schedule"]["003"]["2"].pop("ff"),
     'x.json: step "003" block "2": missing component "ff"'),
    (lambda d: d["cache_schedule"]["schedule"]["007"].pop("1"), 'x.json: step "007" block "1": missing'),
    (lambda d: d["cache_schedule"]["schedule"]["007"].update({"9": {"attn1": True, "attn2": True, "ff": True}}),
     f'x.json: step "007" block "9": unknown block (model blocks: "0".."{DEMO_LAST}")'),
    (lambda d: d["cache_schedule"]["schedule"].pop("019"), 'x.json: step "019": missing (num_inference_steps is 20)'),
    (lambda d: d["cache_schedule"].update(num_blocks=28), f"x.json: cache_schedule.num_blocks: 28, but the model has {DEMO_LAST + 1} blocks"),
    (lambda d: d["cache_schedule"]["schedule"]["000"]["0"].update(
        custom_compute_attn={"name": "compute_attn_magic", "kwargs": {}}),
     'x.json: step "000" block "0" "custom_compute_attn": unknown custom compute "compute_attn_magic"'),
    (lambda d: d["cache_schedule"]["schedule"]["000"]["0"].update(
        custom_compute_attn={"name": "compute_attn_tgate", "kwargs": {"gate_step": 99}}),
     'x.json: step "000" block "0" "custom_compute_attn".kwargs.gate_step: expected an integer in 1..20, got 99'),
])
def test_validation_errors_name_file_and_key_path(tmp_path, edit, message):
    path = _edited(tmp_path, edit)
    with pytest.raises(UserError) as err:
        validate_schedule(load_schedule(path), "demo", source=str(path))
    assert str(err.value).startswith(f"{path}: ")
    assert str(err.value)[len(str(path)) + 2:].startswith(message[len("x.json: "):])
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("edit,message", [
    (lambda d: d["cache_schedule"]["schedule"]["003"]["2"].update(attn1="yes"),
     'step "003" block "2" component "attn1": expected true or false'),
    (lambda d: d["cache_schedule"].update(num_inference_steps=0), "cache_schedule.num_inference_steps"),
    (lambda d: d.pop("cache_schedule"), 'top level: expected an object with a "cache_schedule" object'),
    (lambda d: d["cache_schedule"]["schedule"].update(abc={}), 'step "abc": step keys must be zero-padded'),
])
def test_structural_errors_on_load(tmp_path, edit, message):
    path = _edited(tmp_path, edit)
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")) as err:
        load_schedule(path)
    assert str(err.value).startswith(f"{path}: ")


def test_unreadable_files_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="cannot read schedule"):
        load_schedule(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(UserError, match=r"bad.json: not valid JSON"):
        load_schedule(bad)


def test_family_mismatch_is_refused():
    flux = load_schedule(ECAD / "schedules_in_paper/flux_256/ours_fast.json")
    with pytest.raises(UserError, match="a flux schedule cannot drive a pixart model"):
        validate_schedule(flux, "pixart-alpha-256", source="f.json")


def test_extra_steps_are_a_warning_not_an_error():
    path = ECAD / "flux_cache_schedules/gen_default/default_1024x1024_gs_5.0_steps_08.json"
    warnings = validate_schedule(load_schedule(path), "flux-dev")
    assert warnings == ['steps "008".."049": beyond num_inference_steps 8, ignored']


def _bits(schedule):
    return {k: {b: {c: v for c, v in e.items() if not c.startswith("custom")} for b, e in blocks.items()}
            for k, blocks in schedule.steps.items()}


@pytest.mark.parametrize("model,folder", [("pixart-alpha-256", "alpha_cache_schedules"), ("flux-dev", "flux_cache_schedules")])
@pytest.mark.parametrize("interval", [2, 3, 7])
def test_fora_baseline_equals_ecads_recompute_all_every_n(model, folder, interval):
    ecad = load_schedule(ECAD / folder / f"gen_recompute_all_every_n/recompute_all_every_{interval:03d}.json")
    ours = fora_schedule(resolve_spec(model), 20, interval)
    assert _bits(ours) == _bits(ecad)
    assert ours.name == ecad.name


@pytest.mark.parametrize("name", ["tgate_m_010_sp_003_fi_001_warmup_002", "tgate_m_015_sp_005_fi_001_warmup_002"])
def test_tgate_baseline_equals_ecads(name):
    ecad = load_schedule(ECAD / f"alpha_cache_schedules/gen_tgate/{name}.json")
    a = ecad.attributes
    ours = tgate_schedule(resolve_spec("pixart-alpha-256"), 20, a["gate_step"], a["sp_interval"], a["fi_interval"], a["warmup"])
    assert ours.steps == ecad.steps  # custom_compute_attn entries included
    assert ours.config == ecad.config and ours.name == ecad.name
    assert ours.tgate_gate_step == a["gate_step"]


def test_default_and_other_baselines_fit_their_model():
    spec = resolve_spec("demo")
    ecad_default = load_schedule(ECAD / "alpha_cache_schedules/gen_default/default.json")
    assert all(all(e.values()) for blocks in _bits(default_schedule(spec, 20)).values() for e in blocks.values())
    assert all(all(e.values()) for blocks in _bits(ecad_default).values() for e in blocks.values())
    every = every_schedule(spec, 20, {"attn1": 2, "ff": 4})
    assert [every.recompute(s, "0", "ff") for s in range(5)] == [True, False, False, False, True]
    last = str(DEMO_LAST)
    assert all(every.recompute(s, last, "attn2") for s in range(20))
    delta = delta_dit_schedule(spec, 20, num_cached_blocks=1, boundary_step=10, interval=5)
    assert not delta.recompute(1, last, "attn1") and delta.recompute(1, "0", "attn1")
    assert not delta.recompute(11, "0", "ff") and delta.recompute(11, last, "ff") and delta.recompute(15, "0", "ff")
    for schedule in (every, delta):
        validate_schedule(schedule, spec)


def test_bad_baseline_options_are_user_errors():
    spec = resolve_spec("demo")
    with pytest.raises(UserError, match='--every: unknown component "attn3"'):
        every_schedule(spec, 20, {"attn3": 2})
    with pytest.raises(UserError, match="--gate-step: 30 is outside 1..20"):
        tgate_schedule(spec, 20, 30)
    with pytest.raises(UserError, match="TGATE needs PixArt"):
        tgate_schedule(resolve_spec("flux-dev"), 20, 10)


def test_write_baseline_picks_the_kind_and_stores_its_macs(tmp_path):
    spec = resolve_spec("demo")
    schedule, report = write_baseline("delta-dit", "demo", tmp_path / "d.json", 12,
                                      BaselineParams(interval=3, num_cached_blocks=1, boundary_step=6))
    assert _bits(schedule) == _bits(delta_dit_schedule(spec, 12, 1, 6, 3))
    written = load_schedule(tmp_path / "d.json")
    assert written.metrics["total_macs"] == report.total < report.full
    assert written.metrics["by_inference_step"]["000"]["macs"] == report.by_step["000"]
    for kind, params, message in [("every", BaselineParams(), "--every: give per-component intervals"),
                                  ("magic", BaselineParams(), "make magic: unknown kind"),
                                  ("fora", BaselineParams(interval=0), "--interval: must be a positive integer")]:
        with pytest.raises(UserError, match=message):
            write_baseline(kind, "demo", tmp_path / f"{kind}.json", 12, params)
        assert not (tmp_path / f"{kind}.json").exists()


def test_schedule_is_frozen_and_metrics_survive_replace(tmp_path):
    schedule = load_schedule(ECAD / "schedules_in_paper/pixart_alpha_256/ours_fast.json")
    with pytest.raises(dataclasses.FrozenInstanceError):
        schedule.name = "x"
    out = save_schedule(dataclasses.replace(schedule, name="renamed"), tmp_path / "r.json")
    again = load_schedule(out)
    assert again.name == "renamed" and again.metrics == schedule.metrics and again.steps == schedule.steps
