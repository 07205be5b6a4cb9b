"""The job ledger of a synthetic dataset: which task is pending, running (and whose), done or failed.

nameonly keeps its queue in a text file (`idx cls pending|in_progress|done`): a worker killed
with SIGKILL leaves its class `in_progress` forever, and a preempted one writes a state nothing
re-queues. Here the queue is a SQLite database in the output folder (`ledger.sqlite`, WAL mode,
every change one transaction), and a running task holds a *lease*: the worker's id, its last
heartbeat and when the lease expires. A task whose lease expired (its worker was killed, its
node lost) is simply taken again by the next `claim`; a task held by a process of this machine
that no longer exists is taken at once. Any number of processes, on this machine or others
that see the same folder, can share one ledger: it is the only coordination between them.

A task is one chunk of one class's images from one model (`TaskSpec`); which images a task
holds is decided by the dataset's plan (`ecad_ray.dataset.generation`), not stored here.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ecad_ray.errors import UserError

LEDGER_FILE = "ledger.sqlite"
STATES = ("pending", "running", "done", "failed")
DEFAULT_LEASE_SECONDS = 60.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS tasks (
    task_id TEXT PRIMARY KEY,
    class TEXT NOT NULL,
    model TEXT NOT NULL,
    chunk INTEGER NOT NULL,
    first INTEGER NOT NULL,      -- index of the task's first image within its class
    count INTEGER NOT NULL,      -- images in the task
    state TEXT NOT NULL DEFAULT 'pending',
    worker TEXT,                 -- who holds it (running) or did it (done, failed)
    heartbeat REAL,              -- the holder's last sign of life (unix time)
    lease_until REAL,            -- after this, anyone may take the task again
    attempts INTEGER NOT NULL DEFAULT 0,
    error TEXT                   -- why it failed (failed only)
);
CREATE INDEX IF NOT EXISTS tasks_state ON tasks (model, state);
"""


@dataclass(frozen=True)
class TaskSpec:
    """One unit of work: images [first, first + count) of `class_name` made by `model`."""

    task_id: str
    class_name: str
    model: str
    chunk: int
    first: int
    count: int


@dataclass(frozen=True)
class TaskState:
    """A task as the ledger holds it now."""

    spec: TaskSpec
    state: str
    worker: str | None
    heartbeat: float | None
    lease_until: float | None
    attempts: int
    error: str | None


def worker_id() -> str:
    """This process's name in leases: `host:pid:random` (the random part tells apart a reused pid)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def _dead_here(worker: str | None) -> bool:
    """True for a worker id of a process of this machine that no longer runs."""
    if not worker:
        return False
    host, _, rest = worker.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


class Ledger:
    """The task table of one output folder. One instance per thread (SQLite connections are).

    `seconds` adds up the wall time spent in ledger calls, for the benchmark's overhead figure.
    """

    def __init__(self, output_dir: str | Path, lease_seconds: float = DEFAULT_LEASE_SECONDS):
        self.path = Path(output_dir) / LEDGER_FILE
        self.lease_seconds = lease_seconds
        self.seconds = 0.0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: no implicit transactions; each change below opens its own
        self._db = sqlite3.connect(self.path, timeout=60.0, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: a commit survives a killed process
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    def _transaction(self):
        return _Timed(self)

    def setup(self, meta: dict, tasks: Iterable[TaskSpec]) -> None:
        """Record the dataset's settings and tasks the first time; afterwards check they match.

        `meta`: what decides the images (class set, targets, prompts, models, schedule, ...).
        Joining or resuming a folder made with other settings is refused, naming the setting.
        """
        with self._transaction() as db:
            stored = dict(db.execute("SELECT key, value FROM meta").fetchall())
            wanted = {k: json.dumps(v, sort_keys=True) for k, v in meta.items()}
            if stored:
                for key in sorted(set(stored) | set(wanted)):
                    if stored.get(key) != wanted.get(key):
                        raise UserError(
                            f"--output-dir {self.path.parent}: holds a dataset made with {key}={_short(stored.get(key))}, "
                            f"this command has {key}={_short(wanted.get(key))}; use another --output-dir"
                        )
                return
            db.executemany("INSERT INTO meta (key, value) VALUES (?, ?)", wanted.items())
            db.executemany(
                "INSERT INTO tasks (task_id, class, model, chunk, first, count) VALUES (?, ?, ?, ?, ?, ?)",
                [(t.task_id, t.class_name, t.model, t.chunk, t.first, t.count) for t in tasks],
            )

    def meta(self) -> dict:
        """The settings `setup` recorded (empty for a new ledger)."""
        with self._transaction() as db:
            return {k: json.loads(v) for k, v in db.execute("SELECT key, value FROM meta")}

    def retry_failed(self) -> int:
        """Put failed tasks back to pending (a rerun retries them); returns how many."""
        with self._transaction() as db:
            return db.execute("UPDATE tasks SET state='pending', error=NULL WHERE state='failed'").rowcount

    def claim(self, worker: str, model: str | None = None) -> TaskSpec | None:
        """Take the next task for `worker`: a pending one, or a running one whose lease expired
        or whose holder (a process of this machine) is gone. None when there is none to take."""
        now = time.time()
        with self._transaction() as db:
            rows = db.execute(
                "SELECT task_id, worker, lease_until, state FROM tasks WHERE state IN ('pending', 'running')"
                + (" AND model = ?" if model is not None else "") + " ORDER BY state = 'running', task_id",
                (model,) if model is not None else (),
            ).fetchall()
            for task_id, holder, lease_until, state in rows:
                if state == "pending" or (lease_until or 0) < now or _dead_here(holder):
                    db.execute(
                        "UPDATE tasks SET state='running', worker=?, heartbeat=?, lease_until=?, attempts=attempts+1, "
                        "error=NULL WHERE task_id=?", (worker, now, now + self.lease_seconds, task_id))
                    return self._spec(db, task_id)
        return None

    def heartbeat(self, worker: str) -> int:
        """Extend the lease of every task `worker` holds; returns how many it holds."""
        now = time.time()
        with self._transaction() as db:
            return db.execute("UPDATE tasks SET heartbeat=?, lease_until=? WHERE worker=? AND state='running'",
                              (now, now + self.lease_seconds, worker)).rowcount

    def finish(self, task_id: str, worker: str) -> bool:
        """Mark `task_id` done by `worker`. False when `worker` no longer held it (its lease
        expired and another took it over: their images are the same files, written atomically)."""
        with self._transaction() as db:
            return db.execute("UPDATE tasks SET state='done', lease_until=NULL WHERE task_id=? AND worker=? "
                              "AND state='running'", (task_id, worker)).rowcount == 1

    def fail(self, task_id: str, worker: str, error: str) -> None:
        """Mark `task_id` failed with the error's line (a rerun retries it)."""
        with self._transaction() as db:
            db.execute("UPDATE tasks SET state='failed', error=?, lease_until=NULL WHERE task_id=? AND worker=?",
                       (error, task_id, worker))

    def release(self, worker: str) -> int:
        """Hand back every task `worker` still holds (an interrupted or aborted run): pending again."""
        with self._transaction() as db:
            return db.execute("UPDATE tasks SET state='pending', worker=NULL, lease_until=NULL "
                              "WHERE worker=? AND state='running'", (worker,)).rowcount

    def tasks(self) -> list[TaskState]:
        """Every task with its state, in task order."""
        with self._transaction() as db:
            rows = db.execute("SELECT task_id, class, model, chunk, first, count, state, worker, heartbeat, "
                              "lease_until, attempts, error FROM tasks ORDER BY task_id").fetchall()
        return [TaskState(TaskSpec(*r[:6]), *r[6:]) for r in rows]

    def unfinished(self, model: str | None = None) -> int:
        """Tasks pending or running (of `model`)."""
        with self._transaction() as db:
            sql = "SELECT COUNT(*) FROM tasks WHERE state IN ('pending', 'running')"
            return db.execute(sql + (" AND model = ?" if model else ""), (model,) if model else ()).fetchone()[0]

    @staticmethod
    def _spec(db: sqlite3.Connection, task_id: str) -> TaskSpec:
        row = db.execute("SELECT task_id, class, model, chunk, first, count FROM tasks WHERE task_id=?",
                         (task_id,)).fetchone()
        return TaskSpec(*row)


class _Timed:
    """One immediate transaction (the write lock taken at BEGIN, so two claims never race),
    committed on success, rolled back on error, its wall time added to `Ledger.seconds`."""

    def __init__(self, ledger: Ledger):
        self.ledger = ledger

    def __enter__(self) -> sqlite3.Connection:
        self.started = time.perf_counter()
        self.ledger._db.execute("BEGIN IMMEDIATE")
        return self.ledger._db

    def __exit__(self, kind, value, tb) -> None:
        try:
            self.ledger._db.execute("ROLLBACK" if kind else "COMMIT")
        finally:
            self.ledger.seconds += time.perf_counter() - self.started


def _short(value: str | None, limit: int = 80) -> str:
    if value is None:
        return "(unset)"
    return value if len(value) <= limit else value[: limit - 3] + "..."


def open_ledger(output_dir: str | Path) -> Ledger:
    """The ledger of an existing dataset folder (for `status` and `check`); one line if there is none."""
    path = Path(output_dir) / LEDGER_FILE
    if not path.is_file():
        raise UserError(f"{output_dir}: no {LEDGER_FILE} there; is it a folder `ecad-ray dataset generate` wrote?")
    return Ledger(output_dir)
