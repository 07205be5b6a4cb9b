"""Errors the CLI turns into one clear line and exit code 1, wherever they were raised.

Raise `UserError` for anything a user can fix (a bad file, option or missing weights); the
message must name the file/option and say what is wrong. Anything else raised inside a stage
of a Ray plan becomes a `StageError` naming the stage and the item (the full traceback goes to
the run's `logs/error.log`); anything else raised in the driver is a bug and keeps its traceback.
"""

import re


class UserError(Exception):
    """A problem with the user's input or environment, reported as one line without traceback."""


class StageError(UserError):
    """A failure inside one stage of a plan, usually on a Ray worker: which stage, which item, why.

    Its text is the line the CLI prints: `<stage>: <item>: <cause>`. It pickles with its three
    parts so it crosses from a Ray worker to the driver intact.
    """

    def __init__(self, stage: str, item: str, reason: str):
        super().__init__(f"{stage}: {item}: {reason}")
        self.stage, self.item, self.reason = stage, item, reason

    def __reduce__(self):
        return type(self), (self.stage, self.item, self.reason)


def user_error_in(err: BaseException) -> UserError | None:
    """The `UserError` (a `StageError` from a worker, or one raised by a remote constructor)
    inside `err`'s chain, or None.

    Ray re-raises a worker's exception as a RayTaskError whose `.cause` is the original (and whose
    class also derives from the original's, with the remote traceback as its text), so `.cause`
    is looked at before the exception itself. Walks the links without importing Ray.
    """
    seen: set[int] = set()
    todo = [err]
    while todo:
        current = todo.pop()
        if not isinstance(current, BaseException) or id(current) in seen:
            continue
        seen.add(id(current))
        cause = getattr(current, "cause", None)
        if isinstance(cause, UserError):
            return cause
        if isinstance(current, UserError):
            return current
        todo += [current.__context__, current.__cause__, cause]
    return _user_error_in_text(err)


_REMOTE_LINE = re.compile(r"^ecad_ray\.errors\.(?:StageError|UserError): (.+)$", re.MULTILINE)


def _user_error_in_text(err: BaseException) -> UserError | None:
    """The outermost of our errors named in the text of a Ray error that kept only text.

    When a remote constructor fails, Ray's ActorDiedError carries the worker's traceback as a
    string, not the exception object; its last `ecad_ray.errors.StageError: ...` line is ours.
    """
    seen: set[int] = set()
    current: BaseException | None = err
    while isinstance(current, BaseException) and id(current) not in seen:
        seen.add(id(current))
        found = _REMOTE_LINE.findall(str(current))
        if found:
            return UserError(found[-1])
        current = current.__cause__ or current.__context__
    return None


def one_line(err: BaseException) -> str:
    """`Type: first line of the message`, for a cause inside a one-line report."""
    text = (str(err).strip().splitlines() or [""])[0]
    return f"{type(err).__name__}: {text}" if text else type(err).__name__
