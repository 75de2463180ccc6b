"""The config folders of systems declared outside this package, on Hydra's search path.

``configs/`` holds this package's systems (``model/<system>/``, ``task/<system>/``); a system
installed from elsewhere (an entry point or ``MTPG_AIAA_SYSTEMS``, ``models/registry.py``)
keeps its configs in its own folder. ``train.py`` and ``test.py`` call
``register_system_configs()`` before ``@hydra.main`` composes, so ``task=<system>/<task>``
and ``model=<system>/<config>`` find them with no edit to ``configs/``.
"""
from __future__ import annotations

from pathlib import Path

from hydra.core.config_search_path import ConfigSearchPath
from hydra.core.plugins import Plugins
from hydra.plugins.search_path_plugin import SearchPathPlugin

from omegaconf import OmegaConf

from ..models.registry import PROJECT_CONFIGS, config_search_path

PROVIDER = "mtpg-aiaa systems"


class SystemConfigsSearchPath(SearchPathPlugin):
    """Appends each outside system's config folder after the primary ``configs/``."""

    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        for path in config_search_path():
            search_path.append(provider=PROVIDER, path=path)


def config_options(group: str) -> str:
    """``"a | b | c"``: the options of config ``group`` in ``configs/`` and in every outside
    system's config folder (``task`` gives every registered system's tasks); for help texts."""
    folders = [PROJECT_CONFIGS, *(Path(path.removeprefix("file://")) for path in config_search_path())]
    names = {path.relative_to(folder / group).with_suffix("").as_posix()
             for folder in folders for path in (folder / group).rglob("*.yaml")}  # fmt: skip
    return " | ".join(sorted(names))


def register_system_configs() -> None:
    """Register the search-path plugin with Hydra and ``${config_options:GROUP}`` with
    OmegaConf (the help templates, ``configs/hydra/help/``); idempotent."""
    Plugins.instance().register(SystemConfigsSearchPath)
    if not OmegaConf.has_resolver("config_options"):
        OmegaConf.register_new_resolver("config_options", config_options)
