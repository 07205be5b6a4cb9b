"""The plan is data: stage specs checked before Ray starts, run by one function; the schedule
is parsed once in the driver and travels as an object; run.json carries the cache's counts."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from actors.generation import EncodeThenGenerateStage, GeneratorStage, TextEncoderStage, _spread
from actors.metrics import MetricsStage
from actors.pipeline import PlanError, StageSpec, check_plan, run_stages
from actors.stage import Stage
from ecad_ray.caching.schedule import Schedule, load_schedule
from ecad_ray.config import GenerateConfig

ROOT = Path(__file__).resolve().parents[2]
SCHEDULE = ROOT / "schedules" / "demo" / "recompute_all_every_002.json"


class Double(Stage):
    name = "double"
    consumes = {"x": "an int"}
    produces = {"y": "2x"}

    def __call__(self, batch):
        self.check(batch)
        batch["y"] = batch["x"] * 2
        return batch


class AddOffset(Stage):
    name = "offset"
    consumes = {"y": "an int", "x": "an int"}
    produces = {"z": "y + offset"}

    def __init__(self, offset: int):
        self.offset = offset

    def __call__(self, batch):
        self.check(batch)
        batch["z"] = batch["y"] + self.offset
        return batch


class NeedsLabel(Stage):
    name = "needs label"
    consumes = {"x": "an int", "label": "nobody makes this"}


def test_a_stage_consuming_a_column_nobody_produces_is_refused_before_ray_starts(monkeypatch):
    import ray

    monkeypatch.setattr(ray, "init", lambda *a, **k: pytest.fail("the plan check must come before Ray starts"))
    monkeypatch.setattr(ray.data, "from_items", lambda *a, **k: pytest.fail("no dataset for a broken plan"))
    rows = [{"x": 1}, {"x": 2}]
    plan = [StageSpec(Double), StageSpec(NeedsLabel)]
    with pytest.raises(PlanError, match=r"^plan: stage 'needs label' consumes column\(s\) 'label' that neither "
                                        r"the source rows nor an earlier stage produce \(available: x, y\)$"):
        run_stages(rows, plan)
    # order matters: a column produced downstream does not count
    with pytest.raises(PlanError, match="stage 'offset' consumes column\\(s\\) 'y'"):
        check_plan(["x"], [StageSpec(AddOffset, {"offset": 1}), StageSpec(Double)])
    check_plan(["x"], [StageSpec(Double), StageSpec(AddOffset, {"offset": 1})])  # fine
    assert list(run_stages([], plan)) == []  # no rows: nothing to check or run (a fully resumed run)


def test_run_stages_streams_any_plan_through_real_ray_data(ray_local):
    import sys

    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import tests/
    rows = [{"x": i} for i in range(10)]
    plan = [StageSpec(Double, batch_size=3, num_cpus=0.5),
            StageSpec(AddOffset, {"offset": 100}, batch_size=4, num_cpus=0.5, pool=(1, 2))]
    got = {}
    for batch in run_stages(rows, plan, rows_per_block=3):
        got.update(zip(batch["x"].tolist(), batch["z"].tolist()))
    assert got == {i: 2 * i + 100 for i in range(10)}


def test_generate_plans_chain_their_columns_from_the_job_rows(tmp_path):
    from actors.plan import generate_stages
    from ecad_ray.metrics.config import MetricsConfig
    from ecad_ray.run import plan_run

    cfg = GenerateConfig(model="demo", output_dir=str(tmp_path / "r"), prompts=("a", "b"), steps=2,
                         metrics=MetricsConfig(metrics=("clip",)))
    plan = plan_run(cfg)
    fused = generate_stages(plan, gpu=False)
    assert [s.cls for s in fused] == [EncodeThenGenerateStage, MetricsStage]
    assert fused[0].pool == (1, 1) and fused[0].num_cpus == cfg.threads_per_worker
    pooled = generate_stages(plan_run(dataclasses.replace(cfg, num_workers=3, min_workers=1)), gpu=True)
    assert [s.cls for s in pooled] == [TextEncoderStage, GeneratorStage, MetricsStage]
    assert [(s.num_cpus, s.num_gpus) for s in pooled] == [(0, 0.1), (1, 0.8), (0, 0.1)]
    assert pooled[1].pool == (1, 3) and pooled[1].kwargs["device"] == "cuda"
    for stages in (fused, pooled):
        check_plan(plan.jobs[0], stages)


def test_the_schedule_is_parsed_once_in_the_driver_and_the_actor_gets_the_object(tmp_path, monkeypatch):
    """The driver parses --schedule once (plan_run twice: before and under the run lock), ships
    the parsed Schedule in the generator's constructor arguments, and an actor built from them
    (after the pickling Ray does) uses that object without reading the file."""
    import ecad_ray.caching as caching
    from actors import plan as plan_module

    calls = []
    real = caching.load_schedule
    monkeypatch.setattr(caching, "load_schedule", lambda path: calls.append(path) or real(path))
    seen = {}

    def fake_run_stages(rows, stages, rows_per_block=None):
        seen["stages"] = stages
        return iter(())

    monkeypatch.setattr(plan_module, "ray_session", lambda *a: contextlib.nullcontext())
    monkeypatch.setattr(plan_module, "_gpus_available", lambda: False)
    monkeypatch.setattr(plan_module, "run_stages", fake_run_stages)
    out = tmp_path / "run"
    plan_module.run_generate(GenerateConfig(model="demo", output_dir=str(out), prompts=("a red circle",),
                                            schedule=str(SCHEDULE)))
    assert calls == [SCHEDULE]
    (stage_spec,) = seen["stages"]
    schedule = stage_spec.kwargs["generator"]["schedule"]
    assert isinstance(schedule, Schedule) and schedule.num_inference_steps == 20
    assert "schedule_path" not in stage_spec.kwargs["generator"]
    shipped = pickle.loads(pickle.dumps(dict(stage_spec.kwargs)))  # what Ray does to constructor arguments
    assert shipped["generator"]["schedule"] == schedule
    monkeypatch.setattr(caching, "load_schedule", lambda path: pytest.fail("the actor must not parse the schedule"))
    stage = GeneratorStage(**shipped["generator"])
    assert stage.generator.schedule == schedule
    assert json.loads((out / "run.json").read_text())["cache"] == {"computed": 0, "reused": 0, "peak_bytes": 0}


def test_cache_stats_land_in_run_json(tmp_path, ray_local):
    from actors.plan import run_generate

    base = dict(model="demo", prompts=("a red circle", "a blue square"), num_images_per_prompt=2, batch_size=3)
    run_generate(GenerateConfig(output_dir=str(tmp_path / "plain"), steps=4, **base))
    assert json.loads((tmp_path / "plain" / "run.json").read_text())["cache"] is None
    run_generate(GenerateConfig(output_dir=str(tmp_path / "fora"), schedule=str(SCHEDULE), **base))
    cache = json.loads((tmp_path / "fora" / "run.json").read_text())["cache"]
    assert set(cache) == {"computed", "reused", "peak_bytes"}
    # recompute every 2nd step: per batch (4 images in batches of 3: two), 10 of 20 steps run
    # every sub-layer and 10 reuse it; the counts are summed over the batches
    schedule = load_schedule(SCHEDULE)
    per_step = sum(len(schedule.components(block)) for block in schedule.blocks())
    assert cache["computed"] == cache["reused"] == 2 * 10 * per_step
    assert cache["peak_bytes"] > 0
    # run again: every image is on disk, nothing runs (no plan to check) and the cache did nothing
    again = run_generate(GenerateConfig(output_dir=str(tmp_path / "fora"), schedule=str(SCHEDULE), **base))
    assert (again.new_images, again.kept_images) == (0, 4)
    assert json.loads((tmp_path / "fora" / "run.json").read_text())["cache"] == dict.fromkeys(cache, 0)


def test_a_batch_count_is_spread_over_its_rows_exactly():
    assert _spread(7, 3).tolist() == [3, 2, 2] and _spread(0, 2).tolist() == [0, 0]
    assert _spread(5, 5).sum() == 5 and _spread(2, 4).dtype == np.int64
