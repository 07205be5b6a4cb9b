"""Multi-node: a run spread over two worker nodes, a node lost mid-run, a node joining mid-run.

Each test starts a `ray.cluster_utils.Cluster` (a head and worker nodes as separate raylets on
this one machine) in a controller process of its own, under the project's `loopback_only()`:
every node binds to 127.0.0.1. Token auth is on: unlike `ray.init`, `Cluster` does not switch it
on by itself, nor does a driver joining an explicit address, so both get `RAY_AUTH_MODE=token`
and a token file in the test's folder (`RAY_AUTH_TOKEN_PATH`; HOME is left alone). The run is
`ecad-ray generate --address <head>` in a fresh process, as a user joins a real cluster. The head
has no CPUs and every worker node one, so a generation actor (one CPU) can only run on a worker
node, one per node.

Deterministic triggers, no sleeps: the actors hold their second batch (the test-only gate of
`actors.generation._stream_test_gate`) until the test opens it, so "4 PNGs written while the
gate is closed" means two actors each ran a batch, and a node is removed or added while its
work is known to be in flight or queued. Ray Data's own record of where each batch ran
(the stats summary a driver leaves on the cluster with RAY_DATA_ENABLE_STATS_SUMMARY_COLLECTION:
tasks per node, nodes used) confirms which nodes did the work.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from ecad_ray.config import GenerateConfig
from ecad_ray.errors import UserError
from local_cluster import LocalCluster

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "ecad_ray_cli.main"]
PROMPTS = ("a small red circle", "a large blue square", "a yellow triangle", "a green star")

# A client of the head's GCS: the token decides whether it gets an answer.
_GCS_PROBE = r"""
import sys
from ray._raylet import GcsClient
try:
    GcsClient(address=sys.argv[1]).internal_kv_keys(b"", None, timeout=10)
    print("answered")
except Exception as err:
    print(f"refused: {type(err).__name__}")
"""


@pytest.fixture
def cluster(tmp_path):
    started = []

    def start(workers: int) -> LocalCluster:
        started.append(LocalCluster(tmp_path, workers))
        return started[-1]

    yield start
    for c in started:
        c.close()


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """The prompts' embeddings, encoded here once: the runs then have the generation pool alone
    (a text encoder actor would take half a worker node's CPU and make placement depend on timing)."""
    from ecad_ray.embeddings import EmbeddingStore
    from ecad_ray.engine import TextEncoder
    from ecad_ray.models.registry import resolve_model
    from ecad_ray.prompt_sources import PromptSource, embed_prompts, iter_prompts

    folder = tmp_path_factory.mktemp("store")
    (folder / "prompts.txt").write_text("\n".join(PROMPTS) + "\n")
    rows = iter_prompts(PromptSource("file", folder / "prompts.txt", None, None))
    embed_prompts(rows, EmbeddingStore(folder / "embeddings"), TextEncoder(resolve_model("demo"), "cpu", "auto"), 64)
    return folder / "embeddings"


def generate(c: LocalCluster, store: Path, out: Path, *extra: str) -> subprocess.Popen:
    """`ecad-ray generate --address` the test cluster, in a fresh process (its output in out.log)."""
    args = [*CLI, "generate", "--address", c.address, "--input-embeddings", str(store), "--output-dir", str(out),
            "--batch-size", "2", "--steps", "2", "--device", "cpu", *extra]
    with open(f"{out}.log", "w") as log:
        driver = subprocess.Popen(args, cwd=ROOT, env=c.env, stdout=log, stderr=subprocess.STDOUT)
    driver.log = Path(f"{out}.log")
    c.drivers.append(driver)
    return driver


def images(out: Path) -> list[str]:
    return sorted(p.name for p in (out / "images").glob("*.png"))


def wait_for_images(driver: subprocess.Popen, out: Path, n: int, timeout: float = 150) -> None:
    deadline = time.monotonic() + timeout
    while len(images(out)) < n:
        if driver.poll() is not None:
            pytest.fail(f"the run ended with {len(images(out))} image(s) before {n}: {driver.log.read_text()[-2000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"{n} images not written in {timeout} s")
        time.sleep(0.1)


def wait_until(check, what: str, timeout: float = 120):
    deadline = time.monotonic() + timeout
    while not (found := check()):
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.2)
    return found


def finish(driver: subprocess.Popen, timeout: float = 240) -> None:
    try:
        driver.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        driver.kill()
        driver.wait()
        pytest.fail(f"the run did not finish in {timeout} s: {driver.log.read_text()[-2000:]}")
    assert driver.returncode == 0, driver.log.read_text()[-3000:]


def assert_every_image_once(out: Path, n: int) -> None:
    rows = pq.read_table(out / "results.parquet").to_pylist()
    assert len(rows) == n and len({(r["prompt_id"], r["seed"]) for r in rows}) == n
    assert len(images(out)) == n and {r["image_path"] for r in rows} == {f"images/{p}" for p in images(out)}


def test_a_run_spreads_over_both_worker_nodes_on_loopback_with_token_auth(cluster, store, tmp_path):
    c = cluster(workers=2)
    out = tmp_path / "run"
    driver = generate(c, store, out, "--num-images-per-prompt", "3", "--num-workers", "2")
    assert gcs_answers(c, tmp_path) == {"token": "answered", "wrong token": "refused: AuthenticationError",
                                        "no token": "refused: AuthenticationError"}  # while the driver starts
    # an actor runs one batch, then holds its second: 4 images means two actors ran a batch each
    wait_for_images(driver, out, 4)
    assert not c.gate_timed_out(), "the second actor took over a minute to start; the proof does not hold"
    alive = c.generators("ALIVE")
    assert sorted(a["node"] for a in alive) == sorted(c.workers)  # one on each worker node, none on the head
    bound = c.ask("listening")  # every cluster process, the two generation actors included
    assert bound["token_auth"] is True and bound["processes"] >= 9 and bound["listening"]
    driver_ips = listening(driver.pid)
    assert driver_ips  # the driver's own gRPC server
    exposed = [ip for ip in bound["listening"] + driver_ips if ip.removeprefix("::ffff:") != "127.0.0.1"]
    assert exposed == [], f"bound beyond loopback: {exposed}"
    c.open_gate()
    finish(driver)
    assert_every_image_once(out, 12)
    stats = c.generation_stats()  # where Ray Data ran each batch
    assert stats["batches"] == 6 and stats["nodes"] == 2 and stats["min_batches"] >= 1, stats
    assert {a["node"] for a in c.generators()} == set(c.workers) and all(a["restarts"] == 0 for a in c.generators())


def gcs_answers(c: LocalCluster, tmp_path: Path) -> dict[str, str]:
    """Whether the head's GCS answers a client with the cluster's token, a wrong one, none."""
    no_home = {"HOME": str(tmp_path)}  # no ~/.ray/auth_token to fall back on
    envs = {"token": c.env, "wrong token": {**c.env, **no_home, "RAY_AUTH_TOKEN": "0" * 64},
            "no token": {**{k: v for k, v in c.env.items() if not k.startswith("RAY_AUTH")}, **no_home}}
    envs["wrong token"].pop("RAY_AUTH_TOKEN_PATH")
    probes = {who: subprocess.Popen([sys.executable, "-c", _GCS_PROBE, c.address], cwd=ROOT, env=env,
                                    stdout=subprocess.PIPE, text=True) for who, env in envs.items()}
    return {who: p.communicate(timeout=60)[0].strip().splitlines()[-1] for who, p in probes.items()}


def listening(pid: int) -> list[str]:
    """The addresses a process and its children listen on."""
    import psutil

    me = psutil.Process(pid)
    pids = {pid} | {p.pid for p in me.children(recursive=True)}
    return [c.laddr.ip for c in psutil.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN and c.pid in pids]


@pytest.mark.slow
def test_a_node_removed_mid_run_has_its_work_redone(cluster, store, tmp_path):
    c = cluster(workers=2)
    out = tmp_path / "run"
    driver = generate(c, store, out, "--num-images-per-prompt", "6", "--num-workers", "2")
    wait_for_images(driver, out, 4)  # both actors ran a batch and each holds its next one
    assert not c.gate_timed_out()
    lost = c.workers[1]
    assert lost in {a["node"] for a in c.generators("ALIVE")}
    c.ask("remove", node=lost)  # the actor dies with its node, batches in flight on it
    written = len(images(out))
    c.open_gate()
    finish(driver)
    assert written < 24, "the node should go while work is left"
    assert_every_image_once(out, 24)
    # Ray restarted the lost actor on the surviving node, and it redid the lost batches there
    restarted = [a for a in c.generators() if a["restarts"] >= 1]
    assert restarted and {a["node"] for a in restarted} == {c.workers[0]}, c.generators()
    assert c.generation_stats()["batches"] == 12


@pytest.mark.slow
def test_a_node_added_mid_run_gets_a_generation_actor(cluster, store, tmp_path):
    c = cluster(workers=1)
    out = tmp_path / "run"
    driver = generate(c, store, out, "--num-images-per-prompt", "4", "--min-workers", "1", "--num-workers", "2")
    wait_for_images(driver, out, 2)  # the pool started at --min-workers: one actor, holding its 2nd batch
    assert [a["node"] for a in c.generators()] == c.workers  # and asked for no other while no CPU was free
    added = c.ask("add")["node"]
    # batches queue up on the one actor, so Ray Data grows the pool onto the new node's CPU
    wait_until(lambda: added in {a["node"] for a in c.generators("ALIVE")}, "a generation actor on the added node")
    assert not c.gate_timed_out()
    c.open_gate()
    finish(driver)
    assert_every_image_once(out, 16)
    assert sorted(a["node"] for a in c.generators()) == sorted([*c.workers, added])  # never above --num-workers
    stats = c.generation_stats()
    assert stats["batches"] == 8 and stats["nodes"] == 2, stats  # the added node ran batches too


def test_min_workers_makes_the_pool_autoscale_and_defaults_to_a_fixed_pool():
    from actors.pipeline import actor_pool

    fixed = actor_pool(GenerateConfig(num_workers=3).pool_size())
    assert (fixed.min_size, fixed.max_size) == (3, 3)
    scaling = actor_pool(GenerateConfig(num_workers=3, min_workers=1).pool_size())
    assert (scaling.min_size, scaling.max_size) == (1, 3)


@pytest.mark.parametrize("low", [0, 3])
def test_min_workers_outside_one_to_num_workers_is_one_line(low):
    cfg = GenerateConfig(prompts=("a",), num_workers=2, min_workers=low)
    with pytest.raises(UserError, match=rf"^--min-workers {low}: must be between 1 and --num-workers \(2\)$"):
        cfg.check_counts()
