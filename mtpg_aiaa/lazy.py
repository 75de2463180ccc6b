"""Package attributes imported on first use (PEP 562), so that importing a package costs
nothing until a name is used: ``python -m mtpg_aiaa list`` and ``--help`` load no torch."""
from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_attributes(package: str, public: Mapping[str, str], renamed: Mapping[str, str] | None = None
                    ) -> Callable[[str], Any]:  # fmt: skip
    """A module ``__getattr__``: ``name`` -> ``public[name]`` (a module path) imported, then its
    attribute ``renamed.get(name, name)``; other names raise ``AttributeError``."""
    renamed = dict(renamed or {})

    def __getattr__(name: str) -> Any:
        if name in public:
            return getattr(importlib.import_module(public[name]), renamed.get(name, name))
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
