"""Swap a method on one object for a wrapper, and undo it: how every caching hook attaches.

The hooks set an *instance* attribute (`module.forward = wrapper`) rather than using torch's
forward hooks, because a sub-layer hook must be able to skip the module entirely (return the
cached output without running it), which a forward pre-hook cannot do.
"""

from __future__ import annotations

from typing import Callable


def wrap_attribute(obj, name: str, wrapper) -> Callable[[], None]:
    """Set `obj.name = wrapper` as an instance attribute; return the undo.

    The undo puts back an instance attribute that was there before (another library's hook,
    e.g. accelerate's offloading), or removes ours so the class method shows through again.
    """
    had, previous = name in vars(obj), vars(obj).get(name)
    setattr(obj, name, wrapper)

    def undo() -> None:
        if had:
            setattr(obj, name, previous)
        else:
            vars(obj).pop(name, None)

    return undo
