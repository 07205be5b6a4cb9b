"""Genome <-> schedule on every model shape; ECAD population folders (PixArt and FLUX) load."""

import shutil
from pathlib import Path

import numpy as np
import pytest

from ecad_ray.caching import load_schedule, resolve_spec, shipped_spec, validate_schedule
from ecad_ray.errors import UserError
from ecad_ray.search.genome import GenomeLayout, genome_key
from ecad_ray.search.population import baseline_population, candidate_files, load_population

SCHEDULES = Path(__file__).resolve().parents[2] / "schedules"


@pytest.mark.parametrize("model, bits", [("pixart-alpha-256", 20 * 28 * 3), ("flux-dev", 20 * (19 + 38) * 3)])
def test_genome_has_ecad_size_and_round_trips(model, bits):
    layout = GenomeLayout(shipped_spec(model), 20)
    assert layout.size == bits
    genome = np.random.default_rng(1).random(bits) < 0.5
    schedule = layout.to_schedule(genome, "x")
    validate_schedule(schedule, layout.spec)
    assert np.array_equal(layout.from_schedule(schedule), genome)
    assert layout.uncached().all()


def test_published_schedule_becomes_its_genome():
    layout = GenomeLayout(shipped_spec("pixart-alpha-256"), 20)
    path = SCHEDULES / "alpha_cache_schedules" / "gen_recompute_all_every_n" / "recompute_all_every_002.json"
    genome = layout.from_schedule(load_schedule(path))
    per_step = genome.reshape(20, -1)
    assert per_step[::2].all() and not per_step[1::2].any()  # recompute at even steps only
    assert genome_key(genome) != genome_key(layout.uncached())


def _ecad_population(root: Path, name: str, sources: list[Path]) -> Path:
    """ECAD's layout: <populations>/<name>/gen_000/candidates/cand_NNN.json (+ manager_config.json)."""
    folder = root / name / "gen_000" / "candidates"
    folder.mkdir(parents=True)
    for i, src in enumerate(sources):
        shutil.copyfile(src, folder / f"cand_{i:03d}.json")
    (root / name / "gen_000" / "manager_config.json").write_text("{}")
    return root / name


@pytest.mark.parametrize("model, folder", [("pixart-alpha-256", "alpha_cache_schedules"), ("flux-dev", "flux_cache_schedules")])
def test_ecad_population_folders_load(tmp_path, model, folder):
    sources = sorted((SCHEDULES / folder / "gen_recompute_all_every_n").glob("*.json"))[:5]
    root = _ecad_population(tmp_path, "seed", sources)
    layout = GenomeLayout(shipped_spec(model), 20)
    genomes, names = load_population(root, layout)
    assert genomes.shape == (5, layout.size)
    assert names == [f"cand_{i:03d}" for i in range(5)]
    for genome, src in zip(genomes, sources):
        assert np.array_equal(genome, layout.from_schedule(load_schedule(src)))
    # a plain folder of schedule files (`schedule make` output, ECAD's gen_recompute_all_every_n) loads too
    plain, _ = load_population(sources[0].parent, layout)
    assert any(np.array_equal(plain_genome, genomes[0]) for plain_genome in plain)


def test_latest_generation_is_the_seed(tmp_path):
    sources = sorted((SCHEDULES / "alpha_cache_schedules" / "gen_recompute_all_every_n").glob("*.json"))
    root = _ecad_population(tmp_path, "seed", sources[:3])
    later = root / "gen_004" / "candidates"
    later.mkdir(parents=True)
    shutil.copyfile(sources[5], later / "cand_000.json")
    assert candidate_files(root) == [later / "cand_000.json"]


def test_a_population_for_another_model_is_one_line(tmp_path):
    sources = sorted((SCHEDULES / "flux_cache_schedules" / "gen_recompute_all_every_n").glob("*.json"))[:2]
    root = _ecad_population(tmp_path, "flux", sources)
    with pytest.raises(UserError, match=r"cand_000\.json: cache_schedule: a flux schedule cannot drive a pixart model"):
        load_population(root, GenomeLayout(shipped_spec("pixart-alpha-256"), 20))
    with pytest.raises(UserError, match="no such folder"):
        load_population(tmp_path / "missing", GenomeLayout(shipped_spec("flux-dev"), 20))


def test_baselines_seed_the_demo_search():
    layout = GenomeLayout(resolve_spec("demo"), 20)
    genomes, names = baseline_population(layout)
    assert "recompute_all_every_002" in names
    assert genomes.shape[1] == layout.size
    assert not genomes.all(axis=1).any()  # every seed reuses something (ECAD's constraint holds)
