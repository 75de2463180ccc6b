"""JSON from user files, parsed only after its nesting depth is checked.

``json.loads`` recurses once per level: 100,000 nested brackets (200 KB) end in a
``RecursionError`` traceback, or, with a raised recursion limit, in a crashed interpreter.
Records of a description or annotation file are a few levels deep, so the depth is counted
first (a linear scan outside strings) and anything deeper than ``MAX_JSON_DEPTH`` is refused
in one line naming the file.
"""
from __future__ import annotations

import json
import re
from typing import Any

from mtpg_aiaa.data.errors import BadInputError

MAX_JSON_DEPTH = 64
_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKETS = re.compile(r"[\[\]{}]")


def json_depth(text: str) -> tuple[int, int]:
    """The deepest nesting of ``[``/``{`` in ``text`` outside strings, and the character
    offset where it is first reached (in ``text`` with its strings removed)."""
    depth = deepest = where = 0
    for match in _BRACKETS.finditer(_STRINGS.sub('""', text)):
        if match.group() in "[{":
            depth += 1
            if depth > deepest:
                deepest, where = depth, match.start()
        else:
            depth -= 1
    return deepest, where


def parse_json(text: str, where: str, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """``json.loads(text)``, or ``BadInputError`` naming ``where`` for invalid or too-deep JSON."""
    deepest, _ = json_depth(text)
    if deepest > max_depth:
        raise BadInputError(f"{where}: JSON nested {deepest} levels deep, more than {max_depth}; not a records file")
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise BadInputError(f"{where}: not valid JSON ({error})") from None
