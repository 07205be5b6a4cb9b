"""The search and the comparison table through the Ray actor pool, on the session's local Ray.

A tiny demo search (4-step schedules, 2 prompts, population 4) runs one generation on two
workers, is resumed for a second one (nothing scored twice), and its front is scored beside a
peer; `ecad-ray benchmark --method` puts demo schedules and peers in one table.
"""

import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from ecad_ray.search.algorithm import NsgaSettings
from ecad_ray.search.evaluator import EvalJob
from ecad_ray.search.run import SearchConfig, front_rows, scored_candidates

PROMPTS = ("a red circle above a blue square", "a small green triangle")
ROOT = Path(__file__).resolve().parents[2]


def _config(out, generations, resume=False, fidelity=""):
    return SearchConfig(model="demo", job=EvalJob(PROMPTS, batch_size=2), output_dir=str(out), objective="judge",
                        fidelity=fidelity, generations=generations, nsga=NsgaSettings(population=4, seed=2), steps=4,
                        resume=resume, num_workers=2)


def test_search_on_the_actor_pool_resumes_and_reports_the_front_beside_a_peer(tmp_path, ray_local):
    from actors.search import search_on_ray

    counts: list[int] = []
    search_on_ray(_config(tmp_path, 1, fidelity="psnr"), lambda p: counts.append(p.evaluated))
    first = len(scored_candidates(tmp_path))
    assert counts[-1] == first > 0  # every distinct genome scored once, on the pool
    assert (tmp_path / "gen_001" / "algorithm.npz").is_file()

    counts.clear()
    front = search_on_ray(_config(tmp_path, 2, resume=True, fidelity="psnr"), lambda p: counts.append(p.evaluated),
                          methods=["fbc:threshold=0.2"])
    # the resumed run scored only gen_002's new genomes: nothing from gen_000 / gen_001 again
    assert len(scored_candidates(tmp_path)) == first + counts[-1]
    assert (tmp_path / "gen_002" / "algorithm.npz").is_file()
    assert front == front_rows(tmp_path)
    rows = pq.read_table(tmp_path / "methods.parquet").to_pylist()
    assert [r["kind"] for r in rows].count("searched") == len(front)
    by_name = {r["method"]: r for r in rows}
    assert by_name["uncached"]["psnr"] == 100.0 and by_name["uncached"]["macs_ratio"] == 1.0
    peer = by_name["fbc:threshold=0.2"]
    assert peer["kind"] == "peer" and peer["macs_ratio"] is None and peer["seconds_per_image"] > 0
    for r in front:  # the table's fidelity of a front schedule is the one its search scored
        assert by_name[r["name"]]["psnr"] == pytest.approx(r["psnr"])
    assert (tmp_path / "speed_vs_quality.png").stat().st_size > 0


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """An embeddings store of two demo captions."""
    from ecad_ray.embeddings import EmbeddingStore
    from ecad_ray.engine import TextEncoder
    from ecad_ray.models.registry import resolve_model

    folder = tmp_path_factory.mktemp("store")
    spec = resolve_model("demo")
    tensors = TextEncoder(spec, "cpu")(list(PROMPTS), ["", ""])
    EmbeddingStore(folder).write_shard(tensors, prompt_ids=["0", "1"], prompts=list(PROMPTS), negative_prompts=["", ""],
                                       model=spec.name, family=spec.family, partition="")
    return folder


def _cli(monkeypatch, *args):
    from ecad_ray_cli.main import main

    monkeypatch.setattr(sys, "argv", ["ecad-ray", *args])
    with pytest.raises(SystemExit) as code:
        main()
    return code.value.code


def test_benchmark_method_puts_schedules_and_peers_in_one_table(tmp_path, store, ray_local, monkeypatch, capsys):
    import shutil

    schedules = tmp_path / "schedules"
    schedules.mkdir()
    for name in ("default", "recompute_all_every_002"):
        shutil.copy(ROOT / "schedules" / "demo" / f"{name}.json", schedules)
    out = tmp_path / "bench"
    code = _cli(monkeypatch, "benchmark", "--input-embeddings", str(store), "--schedule-dir", str(schedules),
                "--method", "pab:skip=2", "--method", "mag:threshold=0.2", "--output-dir", str(out))
    printed = capsys.readouterr().out
    assert code in (0, None), printed
    rows = {r["method"]: r for r in pq.read_table(out / "methods.parquet").to_pylist()}
    assert set(rows) == {"uncached", "default", "recompute_all_every_002", "pab:skip=2", "mag:threshold=0.2"}
    assert rows["default"]["psnr"] == 100.0  # all-recompute: the uncached images exactly
    assert rows["recompute_all_every_002"]["macs_ratio"] == pytest.approx(0.505, abs=0.01)
    assert rows["recompute_all_every_002"]["psnr"] < 100.0
    for name in ("default", "recompute_all_every_002"):  # what the run computed is what the schedule says
        assert rows[name]["counted_macs_ratio"] == pytest.approx(rows[name]["macs_ratio"], rel=1e-6)
    for peer in ("pab:skip=2", "mag:threshold=0.2"):
        assert rows[peer]["kind"] == "peer" and rows[peer]["macs_ratio"] is None
        assert 0 < rows[peer]["counted_macs_ratio"] < 1  # it skipped work, which was counted
        assert 15 < rows[peer]["psnr"] < 100  # it changed the images, without wrecking them
        assert peer in printed
    assert np.isfinite([r["quality"] for r in rows.values()]).all()
    assert {r["objective"] for r in rows.values()} == {"judge"}
    assert (out / "speed_vs_quality.png").is_file()


@pytest.mark.parametrize("args, message", [
    (["--method", "tea:x=1"], "error: --method tea:x=1: unknown method 'tea'"),
    (["--method", "mag:threshold=zero"], "error: --method mag:threshold=zero: threshold=zero is not a valid float"),
    (["--schedule-dir", "nowhere"], "--schedule-dir nowhere: no such folder"),
])
def test_bad_benchmark_methods_are_one_line_before_ray_starts(tmp_path, store, monkeypatch, capsys, args, message):
    import ray

    running = ray.is_initialized()
    code = _cli(monkeypatch, "benchmark", "--input-embeddings", str(store), "--output-dir", str(tmp_path / "o"),
                *(["--method", "pab:skip=2"] if "--schedule-dir" in args else []), *args)
    err = capsys.readouterr().err.strip()
    assert code == 1 and message in err and "\n" not in err
    assert ray.is_initialized() == running  # failed before any Ray was started
