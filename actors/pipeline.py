"""A plan is data: a list of `StageSpec`s, run by one function, `run_stages`.

    stages = [StageSpec(TextEncoderStage, {...}, batch_size=8, num_cpus=0.5),
              StageSpec(GeneratorStage, {...}, batch_size=8, num_cpus=2, pool=(1, 4))]
    for batch in run_stages(job_rows, stages):   # checked first, then one Ray Data dataset
        ...

Every plan (`generate`, `benchmark`, `var generate`, and whatever comes next: RL rollouts,
schedule search) is a list of specs built from its config; none calls `map_batches` itself.
`check_plan` proves, before any Ray call, that every column a stage consumes is produced
upstream: by the source rows or by an earlier stage's `produces`. No model code lives here.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


class PlanError(ValueError):
    """A plan that cannot run: a stage consumes a column that nothing upstream produces.

    A mistake of whoever built the plan (not of the user's input), so it is raised as is,
    before Ray starts, rather than surfacing as a missing column deep inside a worker."""


@dataclass(frozen=True)
class StageSpec:
    """One stage of a plan: which callable class runs, how it is built, what it asks Ray for.

    The columns it consumes and produces are the class's own (`Stage.consumes` / `.produces`),
    read here rather than repeated, so the plan check and the stage's batch check agree.
    """

    cls: type  # a `Stage` subclass: a Ray Data callable class
    kwargs: Mapping[str, Any] = field(default_factory=dict)  # its constructor arguments
    batch_size: int | None = None  # rows per call (None: whole blocks)
    num_cpus: float = 1.0  # per actor
    num_gpus: float = 0.0  # per actor (a fraction lets stages share one GPU)
    pool: tuple[int, int] = (1, 1)  # (min, max) actors; min < max autoscales between them

    @property
    def name(self) -> str:
        return self.cls.stage_name() if hasattr(self.cls, "stage_name") else self.cls.__name__

    @property
    def consumes(self) -> Mapping[str, str]:
        return getattr(self.cls, "consumes", {})

    @property
    def produces(self) -> Mapping[str, str]:
        return getattr(self.cls, "produces", {})


def check_plan(source_columns: Iterable[str], stages: Sequence[StageSpec]) -> None:
    """Raise `PlanError` naming the first stage that consumes a column nobody upstream produces.

    The source rows' columns count as produced by the source; each stage then adds its
    `produces`. Columns a stage does not declare still pass through at run time (stages add
    columns to the batch), but a plan may only rely on declared ones.
    """
    available = dict.fromkeys(source_columns, "source rows")
    for stage in stages:
        missing = [c for c in stage.consumes if c not in available]
        if missing:
            raise PlanError(
                f"plan: stage {stage.name!r} consumes column(s) {', '.join(map(repr, missing))} that neither "
                f"the source rows nor an earlier stage produce (available: {', '.join(available) or 'none'})"
            )
        for column in stage.produces:
            available.setdefault(column, stage.name)


def actor_pool(pool: tuple[int, int]):
    """Ray Data's compute strategy for a (min, max) pool: fixed when equal, else autoscaling
    (Ray Data starts `min` actors and adds more, up to `max`, while batches queue up and the
    cluster has room, e.g. when a node joins mid-run)."""
    import ray

    low, high = pool
    if low == high:
        return ray.data.ActorPoolStrategy(size=high)
    return ray.data.ActorPoolStrategy(min_size=low, max_size=high)


def run_stages(rows: list[dict], stages: Sequence[StageSpec], rows_per_block: int | None = None) -> Iterator[dict]:
    """Check the plan, then stream `rows` through every stage: numpy batches, as they finish.

    The check runs here, at the call, before any Ray call, so a broken plan fails at once in
    the driver. Iterating needs a running Ray (`actors.plan.ray_session`): a plan never starts
    or stops Ray. `rows_per_block`: split the source into blocks of this many rows (e.g. one
    per generation batch, so every actor of a pool gets work); None lets Ray Data choose.
    """
    if rows:  # no rows, nothing to run (a resumed run with every image on disk)
        check_plan(rows[0], stages)
    return _stream(rows, stages, rows_per_block)


def _stream(rows: list[dict], stages: Sequence[StageSpec], rows_per_block: int | None) -> Iterator[dict]:
    """The Ray Data dataset of a checked plan, iterated batch by batch."""
    if not rows:
        return
    import ray

    quiet_ray_data()
    blocks = max(1, math.ceil(len(rows) / rows_per_block)) if rows_per_block else None
    ds = ray.data.from_items(rows, override_num_blocks=blocks)
    for stage in stages:
        ds = ds.map_batches(
            stage.cls,
            fn_constructor_kwargs=dict(stage.kwargs),
            batch_size=stage.batch_size,
            compute=actor_pool(stage.pool),
            num_cpus=stage.num_cpus,
            num_gpus=stage.num_gpus,
            batch_format="numpy",
        )
    # prefetch_batches=0: with Ray Data's default of 1 the driver got each batch only once the
    # next one was written, adding a whole batch of compute to the first image's latency.
    yield from ds.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=0)


VERBOSE_ENV = "ECAD_RAY_VERBOSE"  # set by `ecad-ray --verbose`


def ray_log_level(verbose_level: int) -> int:
    """Ray's own warnings and errors stay out of the terminal unless `ecad-ray --verbose`."""
    return verbose_level if os.environ.get(VERBOSE_ENV) else logging.CRITICAL


def quiet_ray_data() -> None:
    """No Ray Data progress bars or execution banners: the run draws its own progress bar; and a
    stage's own exception (the `StageError` naming stage and item) reaches the driver as the
    cause, not replaced by Ray Data's generic "UDF failed to process a data block"."""
    import ray

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    ctx.raise_original_map_exception = True
    # after Ray Data configured its logging; a failure reaches the user as one line anyway, its
    # traceback in the run's logs/error.log
    logging.getLogger("ray.data").setLevel(ray_log_level(logging.INFO))


class StagePool:
    """The actors of one stage spec, kept up across many calls (a search's generations).

    `run_stages` builds a Ray Data dataset per call, whose actors end with it: right for one
    pass over a job, wrong for a search that scores a population per generation with the model
    loaded once per worker. A `StagePool` starts `stage.pool[1]` actors of `stage.cls` with the
    stage's resources and Ray Data's restart defaults (a dead worker comes back; its batch is
    retried), and `map` feeds them batches as they free up, yielding results as they finish.
    Each batch is checked against the stage's `consumes` first, as `check_plan` would.
    """

    def __init__(self, stage: StageSpec):
        import ray
        from ray.util import ActorPool

        quiet_ray_data()
        remote = ray.remote(num_cpus=stage.num_cpus, num_gpus=stage.num_gpus,
                            max_restarts=-1, max_task_retries=-1)(stage.cls)
        self.stage = stage
        self.actors = [remote.remote(**dict(stage.kwargs)) for _ in range(stage.pool[1])]
        self._pool = ActorPool(self.actors)

    def map(self, batches: Iterable[dict]) -> Iterator[dict]:
        """Each batch through one actor; results in the order they finish."""
        batches = list(batches)
        for batch in batches:
            check_plan(batch, [self.stage])
        return self._pool.map_unordered(lambda actor, batch: actor.__call__.remote(batch), batches)

    def close(self) -> None:
        import ray

        for actor in self.actors:
            ray.kill(actor)
        self.actors = []


class ElasticPool:
    """The actors of one stage spec, `stage.pool` = (min, max), fed one batch at a time by a
    driver whose work arrives as it goes (a ledger's tasks), rather than as one dataset.

    It starts `min` actors and adds one more, up to `max`, whenever the cluster has the room for
    it (`grow`, called by the driver's loop): a node that joins mid-run gets actors, as Ray Data's
    autoscaling pool would. Actors keep Ray's restart defaults (a killed worker comes back and its
    batch is retried), so a batch once submitted is never lost. A batch goes to an actor that is
    up and idle only; an actor that cannot be placed yet waits without holding work.
    """

    def __init__(self, stage: StageSpec):
        import ray

        quiet_ray_data()
        self.stage = stage
        self._remote = ray.remote(num_cpus=stage.num_cpus, num_gpus=stage.num_gpus,
                                  max_restarts=-1, max_task_retries=-1)(stage.cls)
        self._starting: dict = {}  # ready ref -> actor still being placed / constructed
        self.idle: list = []
        self._busy: dict = {}  # result ref -> actor
        for _ in range(stage.pool[0]):
            self._add()

    @property
    def size(self) -> int:
        """Actors started, placed or not."""
        return len(self._starting) + len(self.idle) + len(self._busy)

    def _add(self) -> None:
        actor = self._remote.remote(**dict(self.stage.kwargs))
        self._starting[actor.__ray_ready__.remote()] = actor

    def grow(self) -> None:
        """Take in actors that finished starting (a failed constructor raises here), and start
        one more when below `max`, none is still starting and the cluster has room for it."""
        import ray

        if self._starting:
            ready, _ = ray.wait(list(self._starting), num_returns=len(self._starting), timeout=0)
            for ref in ready:
                actor = self._starting.pop(ref)
                ray.get(ref)
                self.idle.append(actor)
        if not self._starting and self.size < self.stage.pool[1] and self._room():
            self._add()

    def _room(self) -> bool:
        import ray

        free = ray.available_resources()
        return free.get("CPU", 0.0) >= self.stage.num_cpus and free.get("GPU", 0.0) >= self.stage.num_gpus

    def submit(self, batch: dict):
        """Send `batch` to an idle actor (there must be one); returns the result's object ref."""
        check_plan(batch, [self.stage])
        actor = self.idle.pop()
        ref = actor.__call__.remote(batch)
        self._busy[ref] = actor
        return ref

    def wait(self, timeout: float) -> list:
        """Refs of batches that finished within `timeout` seconds (their actors are idle again)."""
        import ray

        if not self._busy:
            return []
        ready, _ = ray.wait(list(self._busy), num_returns=1, timeout=timeout)
        for ref in ready:
            self.idle.append(self._busy.pop(ref))
        return ready

    @property
    def in_flight(self) -> int:
        return len(self._busy)

    def close(self) -> None:
        import ray

        for actor in [*self._starting.values(), *self.idle, *self._busy.values()]:
            ray.kill(actor)
        self._starting, self.idle, self._busy = {}, [], {}
