"""Rebuilding a configuration dataclass from untrusted JSON (a model card) with type checks."""

from __future__ import annotations

from dataclasses import fields
from typing import Any, TypeVar

T = TypeVar("T")


def config_from_dict(cls: type[T], data: Any, error: type[Exception], what: str) -> T:
    """Build ``cls`` (a dataclass whose defaults give each field's type) from ``data``.

    Integers are accepted for float fields; booleans only for boolean fields.

    Args:
        cls: the configuration dataclass.
        data: the decoded JSON.
        error: exception raised on a problem (the module's own error type).
        what: the configuration's name in messages, e.g. ``"training configuration"``.

    Raises:
        error: not a mapping, an unknown key, or a value of the wrong type.
    """
    if not isinstance(data, dict):
        raise error(f"the {what} must be a mapping, got {type(data).__name__}.")
    types = {f.name: type(getattr(cls(), f.name)) for f in fields(cls)}
    unknown = sorted(set(data) - set(types))
    if unknown:
        raise error(f"unknown {what} key(s): {', '.join(unknown)}.")
    values = {}
    for key, value in data.items():
        want = types[key]
        if want is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, want) or (want is not bool and isinstance(value, bool)):
            raise error(f"{what} {key!r} must be {want.__name__}, got {value!r}.")
        values[key] = value
    return cls(**values)
