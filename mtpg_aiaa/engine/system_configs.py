"""The config folders of systems declared outside this package, on Hydra's search path.

``configs/`` holds this package's systems (``model/<system>/``, ``task/<system>/``); a system
installed from elsewhere (an entry point or ``MTPG_AIAA_SYSTEMS``, ``models/registry.py``)
keeps its configs in its own folder. ``train.py`` and ``test.py`` call
``register_system_configs()`` before ``@hydra.main`` composes, so ``task=<system>/<task>``
and ``model=<system>/<config>`` find them with no edit to ``configs/``.
"""
from __future__ import annotations

from hydra.core.config_search_path import ConfigSearchPath
from hydra.core.plugins import Plugins
from hydra.plugins.search_path_plugin import SearchPathPlugin

from ..models.registry import config_search_path

PROVIDER = "mtpg-aiaa systems"


class SystemConfigsSearchPath(SearchPathPlugin):
    """Appends each outside system's config folder after the primary ``configs/``."""

    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        for path in config_search_path():
            search_path.append(provider=PROVIDER, path=path)


def register_system_configs() -> None:
    """Register the search-path plugin with Hydra (idempotent)."""
    Plugins.instance().register(SystemConfigsSearchPath)
