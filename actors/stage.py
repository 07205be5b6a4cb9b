"""What every Ray Data stage shares: declared input/output columns, checked on entry.

A stage names the columns it consumes and produces (name -> description). A batch missing a
consumed column fails at once with the stage's name in the error, instead of deep inside a
model call on a remote worker.
"""

from __future__ import annotations

from typing import ClassVar


class Stage:
    """Base of the callable classes passed to `Dataset.map_batches`."""

    consumes: ClassVar[dict[str, str]] = {}
    produces: ClassVar[dict[str, str]] = {}

    def check(self, batch: dict) -> int:
        """Raise if a consumed column is missing; return the batch's row count."""
        missing = [c for c in self.consumes if c not in batch]
        if missing:
            raise ValueError(
                f"{type(self).__name__}: batch lacks column(s) {', '.join(missing)}; "
                f"it needs {', '.join(self.consumes)}"
            )
        first = next(iter(self.consumes), None)
        return len(batch[first]) if first else 0
