"""`dataset generate` on a multi-node cluster: a node that joins mid-run gets a generation actor.

The same loopback, token-auth `ray.cluster_utils.Cluster` as the `generate` cluster tests
(tests/local_cluster.py): a head with no CPUs and one-CPU worker nodes, so a generation actor
(one CPU) can only run on a worker node, one per node. The pool starts at `--min-workers 1`; the
actor holds its second batch (the test gate of `actors.generation`) until the test has added a
node and seen the pool grow onto it, so the growth is known to happen mid-run, not by timing.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq

from dataset_prompts import write_prompts
from ecad_ray.dataset.ledger import Ledger
from local_cluster import ROOT, LocalCluster

ELASTIC_GENERATOR = "GeneratorStage"  # the ElasticPool's actor class (not a Ray Data map worker)
CLASSES = ("red circle", "blue square")


def jpgs(out: Path) -> list[str]:
    return sorted(str(p.relative_to(out)) for p in out.glob("*/*.jpg"))


def test_a_node_added_mid_run_gets_a_dataset_generation_actor(tmp_path):
    c = LocalCluster(tmp_path, workers=1)
    try:
        (tmp_path / "classes.txt").write_text("\n".join(CLASSES) + "\n")
        prompts = write_prompts(tmp_path / "p.json", CLASSES)
        out = tmp_path / "out"
        command = [sys.executable, "-m", "ecad_ray_cli.main", "dataset", "generate", "--address", c.address,
                   "--classes-file", str(tmp_path / "classes.txt"), "--images-per-class", "6", "--chunk-size", "2",
                   "--batch-size", "2", "--steps", "2", "--device", "cpu", "--min-workers", "1", "--num-workers", "2",
                   "--prompts", str(prompts), "--output-dir", str(out)]
        with open(tmp_path / "driver.log", "w") as log:
            driver = subprocess.Popen(command, cwd=ROOT, env=c.env, stdout=log, stderr=subprocess.STDOUT)
        c.drivers.append(driver)
        deadline = time.monotonic() + 240
        while len(jpgs(out)) < 2:  # one actor ran a batch and holds its second
            assert driver.poll() is None, (tmp_path / "driver.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "no batch written in 240 s"
            time.sleep(0.2)
        assert [a["node"] for a in c.generators(cls=ELASTIC_GENERATOR)] == c.workers
        added = c.ask("add")["node"]
        deadline = time.monotonic() + 120
        while added not in {a["node"] for a in c.generators("ALIVE", cls=ELASTIC_GENERATOR)}:
            assert time.monotonic() < deadline, "no generation actor on the added node in 120 s"
            time.sleep(0.2)
        assert not c.gate_timed_out()
        c.open_gate()
        driver.wait(timeout=240)
        assert driver.returncode == 0, (tmp_path / "driver.log").read_text()[-3000:]
        expected = sorted(f"{cls.replace(' ', '_')}/{k:06d}.jpg" for cls in CLASSES for k in range(6))
        assert jpgs(out) == expected
        assert sorted(r["path"] for r in pq.read_table(out / "dataset.parquet").to_pylist()) == expected
        assert {t.state for t in Ledger(out).tasks()} == {"done"}
        assert sorted(a["node"] for a in c.generators(cls=ELASTIC_GENERATOR)) == sorted([*c.workers, added])
    finally:
        c.close()
