"""What every Ray Data stage shares: declared columns checked on entry, failures named.

A stage names the columns it consumes and produces (name -> description). A batch missing a
consumed column fails at once with the stage's name in the error, instead of deep inside a
model call on a remote worker. Any exception raised while a stage starts or processes a batch
leaves the worker as a `StageError` that names the stage (`name`), the items of the batch
(prompt ids, seeds, files) and the cause in one line, which the driver prints as is.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any, ClassVar

from ecad_ray.errors import StageError, UserError, one_line

_ITEM_COLUMNS = ("prompt_id", "item_name", "seed")  # what names an item to a user
_SHOWN = 3  # items named in the line; the rest are counted


class Stage:
    """Base of the callable classes passed to `Dataset.map_batches`."""

    name: ClassVar[str] = ""  # the stage's name in error lines (the class name when empty)
    consumes: ClassVar[dict[str, str]] = {}
    produces: ClassVar[dict[str, str]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for method in ("__init__", "__call__"):
            if method in cls.__dict__:
                setattr(cls, method, _named_failures(cls.__dict__[method], method))

    @classmethod
    def stage_name(cls) -> str:
        return cls.name or cls.__name__

    def check(self, batch: dict) -> int:
        """Raise if a consumed column is missing; return the batch's row count."""
        missing = [c for c in self.consumes if c not in batch]
        if missing:
            raise ValueError(f"batch lacks column(s) {', '.join(missing)}; it needs {', '.join(self.consumes)}")
        first = next(iter(self.consumes), None)
        return len(batch[first]) if first else 0


def _named_failures(method, kind: str):
    """Wrap a stage's `__init__`/`__call__` so a failure names the stage and the batch's items."""

    @functools.wraps(method)
    def wrapped(self, *args, **kwargs):
        try:
            _test_fault(type(self).stage_name(), kind, self)
            return method(self, *args, **kwargs)
        except StageError:
            raise  # an inner stage (e.g. inside EncodeThenGenerateStage) already named it
        except Exception as err:  # noqa: BLE001  (every failure leaves the worker named)
            item = "starting the worker" if kind == "__init__" else describe_items(args[0] if args else {})
            cause = str(err) if isinstance(err, UserError) else one_line(err)
            raise StageError(type(self).stage_name(), item, cause) from err

    return wrapped


FAULT_ENV = "ECAD_RAY_TEST_FAULT"


def _test_fault(stage: str, kind: str, instance) -> None:
    """Test-only fault injection, off unless `ECAD_RAY_TEST_FAULT` is set (in a fresh Ray's env).

    `STAGE:init` raises in the stage's constructor. `STAGE:exit:N:MARKER` kills the worker
    process (os._exit, like a crash or an OOM kill) when it starts its N-th batch, once: it
    creates the file MARKER first, and a restarted worker that finds it carries on. The fault
    tests use these instead of racing a kill against a sleep.
    """
    spec = os.environ.get(FAULT_ENV)
    if not spec or not spec.startswith(stage + ":"):
        return
    what, *args = spec[len(stage) + 1:].split(":", 2)
    if what == "init" and kind == "__init__":
        raise RuntimeError(f"test fault: {stage} constructor fails ({FAULT_ENV})")
    if what == "exit" and kind == "__call__":
        seen = instance.__dict__.get("_test_batches", 0) + 1
        instance._test_batches = seen
        marker = Path(args[1])
        if seen == int(args[0]) and not marker.exists():
            marker.touch()
            os._exit(1)


def describe_items(batch: dict) -> str:
    """The items of a batch as a user knows them: `prompt_id 'a', seed 0; ... (+5 more)`."""
    columns = [c for c in _ITEM_COLUMNS if c in batch]
    if not columns:
        return "a batch"
    n = len(batch[columns[0]])
    parts = []
    for i in range(min(n, _SHOWN)):
        parts.append(", ".join(f"{c} {_plain(batch[c][i])!r}" if c != "seed" else f"seed {_plain(batch[c][i])}"
                               for c in columns))
    more = f" (+{n - _SHOWN} more)" if n > _SHOWN else ""
    return "; ".join(parts) + more


def _plain(value):
    return value.item() if hasattr(value, "item") else value
