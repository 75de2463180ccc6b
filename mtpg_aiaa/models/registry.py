"""The system registry: which aesthetics systems exist, read from their own folders.

A system declares itself in a data file, ``system.json``, in its folder (read, never run, so
listing the systems imports neither torch nor the system)::

    {"name": "mtpg", "description": "...",
     "build": "mtpg_aiaa.models.mtpg:build_mtpg_model",       # build(**config) -> Scorer
     "load": "mtpg_aiaa.models.mtpg:load_weights",            # load(path, metadata, **options) -> Scorer
     "recognizes": "mtpg_aiaa.models.mtpg:recognizes",        # recognizes(keys, metadata) -> bool
     "score_range": {"low": 0, "high": 1, "higher_is_better": true},   # null: set by the model config
     "text_names": ["description"],                           # the named texts its models read by default
     "configs": "configs",                                    # its Hydra configs (model/<name>/, task/<name>/)
     "generate_texts": null,                                  # optional: demo.py's writer of missing texts
     "weights_help": "..."}                                   # optional: where a user gets weights (reports)

Callables are ``"module:attr"`` strings, imported on first use. Where systems come from:

- this package: every ``mtpg_aiaa/models/<folder>/system.json`` (a new folder is a new
  system; no list to edit). Their ``configs`` default to the project's ``configs/``;
- installed packages: the entry point group ``mtpg_aiaa.systems``, each naming a package
  whose folder holds a ``system.json`` (``tiny = my_package.tiny`` in ``entry_points.txt``);
- an explicit user setting: ``MTPG_AIAA_SYSTEMS=my_package.tiny,other.pkg``, the same way.

A weights file never adds a system: ``models/loading.py`` only looks its ``system`` up here.
``register_model`` still adds one from Python (tests, notebooks).
"""
from __future__ import annotations

import importlib
import importlib.util
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SYSTEM_FILE = "system.json"
ENTRY_POINT_GROUP = "mtpg_aiaa.systems"
SYSTEMS_VARIABLE = "MTPG_AIAA_SYSTEMS"
PROJECT_CONFIGS = Path(__file__).resolve().parents[2] / "configs"  # the in-package systems' configs
_MODELS_DIR = Path(__file__).resolve().parent
_KNOWN_KEYS = {"name", "description", "build", "load", "recognizes", "score_range", "text_names", "configs",
               "generate_texts", "weights_help"}  # fmt: skip


class SystemDeclarationError(ValueError):
    """A ``system.json`` (or the setting that points at one) that cannot be used; one line."""


def resolve_reference(reference: str, declared_in: Path | str = "") -> Any:
    """``"package.module:attr"`` -> the object (the module is imported now). A reference to
    nothing is a one-line ``SystemDeclarationError`` naming ``declared_in``; an import that
    fails inside the module is that module's bug and keeps its traceback."""
    where = f"{declared_in}: " if declared_in else ""
    module, sep, attr = reference.partition(":")
    if not sep or not module or not attr:
        raise SystemDeclarationError(f"{where}{reference!r} is not a 'module:attr' reference")
    try:
        target: Any = importlib.import_module(module)
    except ModuleNotFoundError as error:
        if error.name is None or not (module == error.name or module.startswith(error.name + ".")):
            raise
        raise SystemDeclarationError(f"{where}{reference!r}: no module {error.name!r}") from None
    for part in attr.split("."):
        if not hasattr(target, part):
            raise SystemDeclarationError(f"{where}{reference!r}: {module} has no {attr!r}")
        target = getattr(target, part)
    return target


class ModelEntry:
    """One registered system.

    Attributes:
        name: registry name (``mtpg``, ``cgiaa``, ``aesnet``).
        build: ``build(**config) -> Scorer``, a fresh model.
        load: ``load(path, metadata, **options) -> Scorer`` for a file this system recognises
            (``options`` it does not name, such as MTPG's ``backbone_precision``, are not passed).
        recognizes: ``recognizes(keys, metadata) -> bool`` from the tensor names and the
            safetensors metadata (``{}`` for ``.pt`` files); used by ``load_model``.
        description: one line for ``list_models``.
        weights_help: one line saying where a user gets weights for this system, or that they
            must be trained here first (reports show it when no weights were given).
        system: what ``system.json`` declared (None for an entry registered from Python).

    ``build``/``load``/``recognizes`` may be callables or ``"module:attr"`` strings; a string
    is imported on first access, so building the registry imports no system.
    """

    def __init__(self, name: str, build: Callable[..., Any] | str, load: Callable[..., Any] | str | None = None,
                 recognizes: Callable[..., bool] | str | None = None, description: str = "",
                 system: SystemSpec | None = None, weights_help: str = ""):  # fmt: skip
        self.name, self.description, self.system, self.weights_help = name, description, system, weights_help
        self._refs = {"build": build, "load": load, "recognizes": recognizes}

    def _resolved(self, key: str) -> Any:
        value = self._refs[key]
        if isinstance(value, str):
            value = self._refs[key] = resolve_reference(value, self.system.declared_in if self.system else "")
        return value

    build = property(lambda self: self._resolved("build"))
    load = property(lambda self: self._resolved("load"))
    recognizes = property(lambda self: self._resolved("recognizes"))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ModelEntry) and (self.name, self._refs, self.description) == (
            other.name, other._refs, other.description)  # fmt: skip

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"ModelEntry({self.name!r}, {self.description!r})"


@dataclass(frozen=True)
class SystemSpec:
    """A system as its ``system.json`` declares it (see the module docstring); nothing imported."""

    name: str
    description: str
    build: str
    load: str | None
    recognizes: str | None
    score_range: dict[str, Any] | None
    text_names: tuple[str, ...] | None
    config_dir: Path
    # ``generate(images, weights_dir, tokenizer, device) -> [{text name: text}]`` (CG-IAA's critiques)
    generate_texts: str | None
    weights_help: str  # where a user gets weights, or that they are trained here first
    declared_in: Path  # the system.json
    origin: str  # "mtpg_aiaa", "entry point NAME of group ..." or "MTPG_AIAA_SYSTEMS=..."

    def task_names(self) -> list[str]:
        """``<name>/<task>`` for every ``task/<name>/*.yaml`` of its configs (no import)."""
        return sorted(f"{self.name}/{path.stem}" for path in (self.config_dir / "task" / self.name).glob("*.yaml"))

    def model_config_names(self) -> list[str]:
        """``<name>/<config>`` for every ``model/<name>/*.yaml`` of its configs (no import)."""
        return sorted(f"{self.name}/{path.stem}" for path in (self.config_dir / "model" / self.name).glob("*.yaml"))


def read_system_file(path: Path, origin: str, default_configs: Path | None = None) -> SystemSpec:
    """The ``SystemSpec`` of one ``system.json``; a one-line error naming the file otherwise."""
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise SystemDeclarationError(f"{path}: cannot read the system declaration ({error})") from None
    if not isinstance(values, dict):
        raise SystemDeclarationError(f"{path}: a system declaration is a JSON object, got {type(values).__name__}")
    unknown = sorted(set(values) - _KNOWN_KEYS)
    if unknown:
        raise SystemDeclarationError(f"{path}: unknown key(s) {unknown}; known: {sorted(_KNOWN_KEYS)}")
    for key in ("name", "description", "build"):
        if not isinstance(values.get(key), str) or not values[key]:
            raise SystemDeclarationError(f"{path}: {key!r} must be a non-empty string")
    name = values["name"]
    if not name.isidentifier() or name != name.lower():
        raise SystemDeclarationError(f"{path}: name {name!r} must be a lower-case identifier (it names folders)")
    for key in ("build", "load", "recognizes", "generate_texts"):
        if values.get(key) is not None and ":" not in str(values[key]):
            raise SystemDeclarationError(f"{path}: {key}={values[key]!r} is not a 'module:attr' reference")
    configs = values.get("configs")
    if configs is None and default_configs is None:
        raise SystemDeclarationError(f"{path}: 'configs' (its Hydra config folder, relative to {path.parent}) is required")
    # The project's configs/ sits beside the package in a clone, not in an installed wheel
    # (scoring needs no config): only a folder a declaration names must exist.
    config_dir = (path.parent / configs).resolve() if configs is not None else default_configs
    if configs is not None and not config_dir.is_dir():
        raise SystemDeclarationError(f"{path}: configs folder {config_dir} does not exist")
    score_range = values.get("score_range")
    if score_range is not None and not (isinstance(score_range, dict) and {"low", "high"} <= set(score_range)):
        raise SystemDeclarationError(f"{path}: score_range must be null or {{\"low\": .., \"high\": ..}}")
    text_names = values.get("text_names")
    return SystemSpec(
        name=name, description=values["description"], build=values["build"], load=values.get("load"),
        recognizes=values.get("recognizes"), score_range=score_range,
        text_names=tuple(text_names) if text_names is not None else None,
        config_dir=config_dir, generate_texts=values.get("generate_texts"),
        weights_help=str(values.get("weights_help") or ""), declared_in=path, origin=origin,
    )  # fmt: skip


def package_folder(module: str, setting: str) -> Path:
    """The folder of package ``module`` without running it (only its parent packages are imported)."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError) as error:
        raise SystemDeclarationError(f"{setting}: cannot find package {module!r} ({error})") from None
    if spec is None:
        raise SystemDeclarationError(f"{setting}: no package {module!r} is importable (is it installed, on PYTHONPATH?)")
    if spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    if spec.origin:
        return Path(spec.origin).parent
    raise SystemDeclarationError(f"{setting}: {module!r} has no folder to hold a {SYSTEM_FILE}")


def _external_declarations() -> list[tuple[str, str]]:
    """``(package, origin)`` for every system named by an entry point or by ``MTPG_AIAA_SYSTEMS``."""
    from importlib.metadata import entry_points

    found = [(ep.value.split(":", 1)[0].strip(), f"entry point {ep.name!r} of group {ENTRY_POINT_GROUP}")
             for ep in entry_points(group=ENTRY_POINT_GROUP)]  # fmt: skip
    setting = os.environ.get(SYSTEMS_VARIABLE, "")
    found += [(module.strip(), f"{SYSTEMS_VARIABLE}={setting}") for module in setting.split(",") if module.strip()]
    return found


def discover_systems() -> dict[str, SystemSpec]:
    """Every declared system by name: this package's folders, then entry points and the setting."""
    specs: dict[str, SystemSpec] = {}

    def add(spec: SystemSpec) -> None:
        if spec.name in specs and specs[spec.name].declared_in != spec.declared_in:
            first = specs[spec.name]
            raise SystemDeclarationError(f"system {spec.name!r} is declared twice: {first.declared_in} ({first.origin}) "
                                         f"and {spec.declared_in} ({spec.origin})")  # fmt: skip
        specs[spec.name] = spec

    for path in sorted(_MODELS_DIR.glob(f"*/{SYSTEM_FILE}")):
        add(read_system_file(path, "mtpg_aiaa", default_configs=PROJECT_CONFIGS))
    for module, origin in _external_declarations():
        path = package_folder(module, origin) / SYSTEM_FILE
        if not path.is_file():
            raise SystemDeclarationError(f"{origin}: package {module!r} has no {SYSTEM_FILE} in {path.parent}")
        add(read_system_file(path, origin))
    return specs


_REGISTRY: dict[str, ModelEntry] = {}
_SPECS: dict[str, SystemSpec] = {}
_discovered = False


def register_model(entry: ModelEntry) -> ModelEntry:
    """Add a system from Python (a declared ``system.json`` is the usual way in)."""
    if entry.name in _REGISTRY and _REGISTRY[entry.name] != entry:
        raise ValueError(f"model {entry.name!r} is registered twice")
    _REGISTRY[entry.name] = entry
    return entry


def _discover() -> None:
    global _discovered
    if _discovered:
        return
    specs = discover_systems()  # raises before anything is marked discovered: the error repeats
    _discovered = True
    for spec in specs.values():
        _SPECS[spec.name] = spec
        register_model(ModelEntry(spec.name, spec.build, spec.load, spec.recognizes, spec.description, system=spec,
                                  weights_help=spec.weights_help))


def systems() -> dict[str, SystemSpec]:
    """The declared systems by name (no system imported)."""
    _discover()
    return dict(sorted(_SPECS.items()))


def describe_systems() -> list[dict[str, Any]]:
    """One plain dict per registered system, for ``python -m mtpg_aiaa list``: name, description,
    score range (None: set by the model config), text names, tasks, model configs and where
    it was declared. Reads the declarations only: imports neither torch nor any system."""
    _discover()
    rows = []
    for name, entry in sorted(_REGISTRY.items()):
        spec = entry.system
        rows.append({
            "name": name, "description": entry.description,
            "score_range": spec.score_range if spec else None,
            "text_names": list(spec.text_names) if spec and spec.text_names is not None else None,
            "tasks": spec.task_names() if spec else [], "model_configs": spec.model_config_names() if spec else [],
            "declared_in": str(spec.declared_in) if spec else "register_model", "origin": spec.origin if spec else "python",
        })  # fmt: skip
    return rows


def config_search_path() -> list[str]:
    """Hydra search-path entries (``file://...``) for the configs of every system declared
    outside this package (the project's own ``configs/`` is already the primary path)."""
    return [f"file://{spec.config_dir}" for spec in systems().values() if spec.config_dir != PROJECT_CONFIGS]


def list_models() -> list[str]:
    _discover()
    return sorted(_REGISTRY)


def get_model_entry(name: str) -> ModelEntry:
    _discover()
    if name not in _REGISTRY:
        raise KeyError(f"unknown model {name!r}; registered: {', '.join(sorted(_REGISTRY)) or 'none'}")
    return _REGISTRY[name]


def create_model(name: str, **config) -> Any:
    """A fresh (randomly initialised unless the config names weights) model of system ``name``."""
    return get_model_entry(name).build(**config)


def entries() -> list[ModelEntry]:
    _discover()
    return [_REGISTRY[name] for name in sorted(_REGISTRY)]


def _reset_for_tests() -> None:
    """Forget what was discovered (a test that changes ``MTPG_AIAA_SYSTEMS`` reads it again)."""
    global _discovered
    _discovered = False
    _SPECS.clear()
    _REGISTRY.clear()
