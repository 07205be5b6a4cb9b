"""NSGA-II ask/tell and its saved state; a real search on the demo model: resume, front, schedules that apply."""

import json

import numpy as np
import pytest

from ecad_ray.caching import apply_schedule, load_schedule, validate_schedule
from ecad_ray.errors import UserError
from ecad_ray.search.algorithm import NsgaSettings, Search, constraint
from ecad_ray.search.evaluator import EvalJob
from ecad_ray.search.run import InProcessEvaluator, SearchConfig, front_rows, run_search, search_status


def _toy_scores(X):
    return np.stack([X.mean(1), (X[:, :16] ^ X[:, 16:]).mean(1)], 1)


def test_ask_tell_round_trip_and_state_without_pickle(tmp_path):
    settings = NsgaSettings(population=6, seed=3)
    X0 = np.random.default_rng(0).random((6, 32)) < 0.5
    search = Search(32, settings)
    search.start(X0, _toy_scores(X0))
    for _ in range(2):
        X = search.ask()
        assert X.dtype == bool and X.shape[1] == 32 and 0 < len(X) <= 6
        search.tell(X, _toy_scores(X))
    survivors = search.survivors()
    assert survivors["X"].shape == (6, 32)
    assert np.array_equal(survivors["G"], constraint(survivors["X"]))
    search.save(tmp_path / "algorithm.npz")
    with np.load(tmp_path / "algorithm.npz", allow_pickle=False) as data:  # plain arrays only
        assert set(data.files) == {"X", "F", "G", "rank", "crowding", "rng"}
    restored = Search.restore(tmp_path / "algorithm.npz", 32, settings)
    for _ in range(2):  # the restored search asks exactly what the live one asks
        a, b = search.ask(), restored.ask()
        assert np.array_equal(a, b)
        search.tell(a, _toy_scores(a))
        restored.tell(b, _toy_scores(b))


def test_constraint_rejects_only_the_all_recompute_genome():
    g = constraint(np.array([[True, True, True], [True, False, True]]))
    assert g[0, 0] > 0 and g[1, 0] <= 0


PROMPTS = ("a red circle above a blue square", "a small green triangle")


def _config(out, generations, resume=False):
    job = EvalJob(prompts=PROMPTS, batch_size=2)
    return SearchConfig(model="demo", job=job, output_dir=str(out), objective="judge", generations=generations,
                        nsga=NsgaSettings(population=4, seed=1), steps=4, resume=resume)


class Counting(InProcessEvaluator):
    """The real in-process evaluator, recording every genome it scores; may stop after `stop_after`."""

    def __init__(self, config, stop_after=None):
        super().__init__(config)
        self.keys, self.stop_after = [], stop_after

    def evaluate(self, items):
        for key, scores in super().evaluate(items):
            if self.stop_after is not None and len(self.keys) == self.stop_after:
                raise KeyboardInterrupt
            self.keys.append(key)
            yield key, scores


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("whole")
    evaluator = Counting(_config(out, 2))
    front = run_search(_config(out, 2), evaluator)
    return out, evaluator.keys, front


def test_resume_after_an_interrupted_generation_scores_nothing_twice(tmp_path, uninterrupted):
    whole, whole_keys, whole_front = uninterrupted
    first = Counting(_config(tmp_path, 2), stop_after=6)  # gen_000 (4) + 2 of gen_001
    with pytest.raises(KeyboardInterrupt):
        run_search(_config(tmp_path, 2), first)
    assert "no generation" not in search_status(tmp_path)[0]  # gen_000 saved
    with pytest.raises(UserError, match="--resume"):
        run_search(_config(tmp_path, 2), Counting(_config(tmp_path, 2)))
    second = Counting(_config(tmp_path, 2, resume=True))
    front = run_search(_config(tmp_path, 2, resume=True), second)
    assert not set(first.keys) & set(second.keys)
    assert len(set(second.keys)) == len(second.keys)
    # the same search an uninterrupted run made: same genomes scored, same front
    assert sorted(first.keys + second.keys) == sorted(whole_keys)
    assert [r["name"] for r in front] == [r["name"] for r in whole_front]
    for gen in ("gen_001", "gen_002"):
        for cand in sorted((tmp_path / gen / "candidates").glob("cand_*.json")):
            mine, theirs = json.loads(cand.read_text()), json.loads((whole / gen / "candidates" / cand.name).read_text())
            assert mine["cache_schedule"]["schedule"] == theirs["cache_schedule"]["schedule"]
            assert "search" in mine["metrics"] and mine["metrics"]["total_macs"] > 0


def test_a_found_schedule_validates_and_applies_on_the_model(uninterrupted):
    from ecad_ray.models.demo import build_pipeline

    out, _, front = uninterrupted
    assert front and all(0 < r["macs_ratio"] < 1 for r in front)
    assert front == front_rows(out)
    schedule = load_schedule(out / "front" / f"{front[0]['name']}.json")
    pipe = build_pipeline()
    pipe.set_progress_bar_config(disable=True)
    validate_schedule(schedule, pipe)
    handle = apply_schedule(pipe, schedule)
    pipe(prompt=list(PROMPTS[:1]), num_inference_steps=4, height=32, width=32, output_type="latent",
         use_resolution_binning=False)
    assert handle.stats.reused > 0
    handle.remove()


def test_resume_with_another_objective_is_one_line(uninterrupted):
    out, _, _ = uninterrupted
    config = SearchConfig(**{**_config(out, 2, resume=True).__dict__, "objective": "psnr"})
    with pytest.raises(UserError, match="different objective"):
        run_search(config, Counting(config))
