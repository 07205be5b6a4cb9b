"""A multi-node Ray cluster on this machine for tests: `ray.cluster_utils.Cluster` in a
controller process of its own, every node on loopback, token auth on (see
tests/pipeline/test_cluster.py for why each setting). Shared by the cluster tests of `generate`
and of `dataset generate`.
"""

from __future__ import annotations

import json
import os
import queue
import secrets
import subprocess
import sys
import threading
import time
from pathlib import Path

from actors.generation import STREAM_TEST_GATE_ENV
from actors.stage import FAULT_ENV

ROOT = Path(__file__).resolve().parents[1]
GENERATOR = "MapWorker(MapBatches(GeneratorStage))"  # Ray Data's actor class for the generation pool

# The controller: owns the Cluster, answers one JSON line per JSON command on stdin.
_CONTROLLER = r"""
import json, sys
import psutil
from actors.plan import loopback_only
from ray.cluster_utils import Cluster

def say(**kw):
    print(json.dumps(kw), flush=True)

with loopback_only():  # every node's servers bind to 127.0.0.1 (cluster mode off)
    cluster = Cluster(initialize_head=True, head_node_args=dict(num_cpus=0, include_dashboard=False))
    workers = [cluster.add_node(num_cpus=1) for _ in range(int(sys.argv[1]))]
nodes = {w.node_id: w for w in workers}
say(address=cluster.address, head=cluster.head_node.node_id, workers=[w.node_id for w in workers])
for line in sys.stdin:
    cmd = json.loads(line)
    if cmd["op"] == "add":
        with loopback_only():
            node = cluster.add_node(num_cpus=1)
        nodes[node.node_id] = node
        say(node=node.node_id)
    elif cmd["op"] == "remove":
        cluster.remove_node(nodes.pop(cmd["node"]))
        say(removed=cmd["node"])
    elif cmd["op"] == "actors":
        say(actors=[dict(cls=a["ActorClassName"], state=a["State"], node=a["Address"]["NodeID"],
                         restarts=a["NumRestarts"]) for a in cluster.global_state.actor_table(None).values()])
    elif cmd["op"] == "listening":
        from ray._private.authentication.authentication_utils import is_token_auth_enabled
        me = psutil.Process()
        pids = {me.pid} | {p.pid for p in me.children(recursive=True)}
        ips = sorted({c.laddr.ip for c in psutil.net_connections(kind="inet")
                      if c.status == psutil.CONN_LISTEN and c.pid in pids})
        say(listening=ips, processes=len(pids), token_auth=is_token_auth_enabled())
    elif cmd["op"] == "stats":  # Ray Data's record of the finished run: on how many nodes each stage ran
        import ray
        with loopback_only():
            ray.init(address=cluster.address, include_dashboard=False, log_to_driver=False,
                     logging_level="ERROR")
        summaries = ray.data.list_stats_summaries()
        ops = [op for s in summaries for op in s.operators_stats]
        say(stats=[dict(op=op.operator_name, nodes=op.node_count.count, min_batches=op.node_count.min,
                        batches=op.node_count.sum) for op in ops if op.node_count])
        ray.shutdown()
    elif cmd["op"] == "quit":
        break
cluster.shutdown()
"""

class LocalCluster:
    """A head (0 CPUs) and `workers` one-CPU worker nodes on loopback, token auth on."""

    def __init__(self, tmp: Path, workers: int, timeout: float = 120):
        self.gate = tmp / "gate"  # actors hold their 2nd batch until gate/driver-has-batch-1 exists
        self.gate.mkdir()
        token = tmp / "auth_token"
        token.write_text(secrets.token_hex(32))
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_") and k != FAULT_ENV}
        # RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0: a joining driver would otherwise rewrite the
        # 127.0.0.1 address to the machine's IP (where nothing listens) and wait forever.
        env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token), RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",
                   RAY_DATA_ENABLE_STATS_SUMMARY_COLLECTION="1")  # the driver leaves its stats on the cluster
        self.env = env
        self.drivers: list[subprocess.Popen] = []  # runs joining this cluster, stopped first on close
        self.proc = subprocess.Popen([sys.executable, "-c", _CONTROLLER, str(workers)], cwd=ROOT,
                                     env={**env, STREAM_TEST_GATE_ENV: str(self.gate)},
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.lines: queue.Queue = queue.Queue()  # its answers, "" once it exits
        threading.Thread(target=self._read, daemon=True).start()
        info = self._answer(timeout)
        self.address, self.head, self.workers = info["address"], info["head"], info["workers"]

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put("")

    def _answer(self, timeout: float = 120) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise TimeoutError(f"the cluster controller did not answer in {timeout} s") from None
            if not line:
                raise RuntimeError(f"the cluster controller exited ({self.proc.wait()})")
            if line.startswith("{"):
                return json.loads(line)

    def ask(self, op: str, **args) -> dict:
        self.proc.stdin.write(json.dumps(dict(op=op, **args)) + "\n")
        self.proc.stdin.flush()
        return self._answer()

    def generators(self, state: str | None = None, cls: str = GENERATOR) -> list[dict]:
        """The generation actors Ray knows of (dead ones keep the node they ran on)."""
        return [a for a in self.ask("actors")["actors"] if a["cls"] == cls and state in (None, a["state"])]

    def generation_stats(self) -> dict:
        return next(s for s in self.ask("stats")["stats"] if "GeneratorStage" in s["op"])

    def open_gate(self) -> None:
        (self.gate / "driver-has-batch-1").touch()

    def gate_timed_out(self) -> bool:
        return (self.gate / "gate-timed-out").exists()

    def close(self) -> None:
        for driver in self.drivers:
            if driver.poll() is None:
                driver.kill()
                driver.wait()
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write(json.dumps(dict(op="quit")) + "\n")
                self.proc.stdin.close()
                self.proc.wait(timeout=60)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()


