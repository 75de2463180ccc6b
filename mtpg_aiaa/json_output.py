"""JSON that other tools can read: every non-finite float written as ``null``.

Python's ``json.dumps`` writes ``NaN`` and ``Infinity`` by default, which are not JSON:
``jq``, JavaScript and most parsers refuse a ``metrics.json`` holding them. A correlation
over constant scores is NaN, so ``test.py`` met this on ordinary input.
"""
from __future__ import annotations

import json
import math
from typing import Any


def finite_or_null(value: Any) -> Any:
    """``value`` with every NaN or infinite float (in dicts, lists and tuples too) as ``None``."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: finite_or_null(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_null(item) for item in value]
    if hasattr(value, "item") and hasattr(value, "dtype"):  # a numpy or torch scalar
        return finite_or_null(value.item())
    return value


def dumps_strict(value: Any, **options: Any) -> str:
    """``json.dumps`` of :func:`finite_or_null` (``value``), refusing anything non-finite left."""
    return json.dumps(finite_or_null(value), allow_nan=False, **options)
