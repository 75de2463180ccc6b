"""Typed checks of a settings dataclass (``TrainerConfig``): a value of the wrong type or out
of range is a one-line ``SettingError`` naming the key, before anything is built.

Without them ``trainer.batch_size=abc`` ends in a ``TypeError`` traceback deep in the
DataLoader and ``trainer.batch_size=0`` in a ``ValueError`` from PyTorch.
"""
from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any

from ..errors import SettingError


def _allowed(hint: Any) -> tuple[tuple[type, ...], bool]:
    """The plain types a type hint allows, and whether it allows None."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        return tuple(a for a in args if a is not type(None)), type(None) in args
    return (hint,), False


def check_types_and_bounds(settings: Any, prefix: str, minimums: dict[str, float],
                           choices: dict[str, tuple] | None = None,
                           below: dict[str, float] | None = None) -> None:  # fmt: skip
    """Check every field of the dataclass ``settings`` against its annotation, ``minimums``
    (inclusive), ``below`` (exclusive upper bounds) and ``choices``; ints given for floats
    are converted in place. Raises ``SettingError`` naming ``<prefix>.<field>``."""
    hints = typing.get_type_hints(type(settings))
    for field in dataclasses.fields(settings):
        key, value = f"{prefix}.{field.name}", getattr(settings, field.name)
        kinds, optional = _allowed(hints[field.name])
        if value is None:
            if not optional:
                raise SettingError(f"{key} must be set (got null)")
            continue
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
            object.__setattr__(settings, field.name, value)
        wanted = " or ".join(k.__name__ for k in kinds) + (" or null" if optional else "")
        if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
            raise SettingError(f"{key} must be {'an' if wanted[0] in 'aeiou' else 'a'} {wanted}, "
                               f"got {value!r} ({type(value).__name__})")  # fmt: skip
        if isinstance(value, float) and not math.isfinite(value):
            raise SettingError(f"{key} must be a finite number, got {value!r}")
        if field.name in minimums and value < minimums[field.name]:
            raise SettingError(f"{key} must be at least {minimums[field.name]:g}, got {value!r}")
        if below and field.name in below and value >= below[field.name]:
            raise SettingError(f"{key} must be below {below[field.name]:g}, got {value!r}")
        if choices and field.name in choices and value not in choices[field.name]:
            raise SettingError(f"{key} must be one of {', '.join(map(str, choices[field.name]))}, got {value!r}")
