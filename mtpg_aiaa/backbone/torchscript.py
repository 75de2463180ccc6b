"""The tensors of a TorchScript archive (OpenAI's CLIP ``.pt`` files), read as data.

``torch.jit.load`` would run the archive's TorchScript (a ``__setstate__`` runs while
loading), so a crafted file could write to disk. Here nothing of the archive is executed:

- ``<archive>/data.pkl`` (the pickled module tree) is parsed by :class:`_DataUnpickler`,
  which resolves only tensor-rebuilding functions, storage types and plain containers;
  every ``__torch__.*`` class becomes an inert :class:`ScriptObject` that keeps its
  attribute dict; any other global is refused;
- each tensor's bytes come from ``<archive>/data/<key>``, checked against its declared size;
- which attributes are parameters or buffers is read from the ``__parameters__`` /
  ``__buffers__`` lines of ``<archive>/code/**.py`` as text, so the result has the keys
  ``torch.jit.load(path).state_dict()`` would give (constants and traced inputs are ignored).
"""
from __future__ import annotations

import collections
import io
import math
import pickle
import re
import zipfile
from pathlib import Path

import torch

_STORAGE_DTYPES = {
    "DoubleStorage": torch.float64, "FloatStorage": torch.float32, "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool, "ComplexFloatStorage": torch.complex64, "ComplexDoubleStorage": torch.complex128,
}  # fmt: skip
_CLASS_HEADER = re.compile(
    r"^class (?P<name>[\w.]+)\(Module\):\n"
    r"  __parameters__ = \[(?P<params>[^\]]*)\]\n"
    r"  __buffers__ = \[(?P<buffers>[^\]]*)\]",
    re.MULTILINE,
)


MAX_TEXT_BYTES = 16 << 20  # one code entry, inflated
MAX_MODULE_DEPTH = 256  # nested sub-modules; CLIP's deepest path is under 10


class TorchScriptReadError(ValueError):
    """The archive cannot be read as data (the message says why; the caller names the file)."""


class ScriptObject:
    """An inert stand-in for a TorchScript class instance: it only stores what the pickle gives."""

    qualified_name = "?"
    state = None

    def __init__(self, *args) -> None:
        pass

    def __setstate__(self, state) -> None:  # called by the unpickler's BUILD: stores, runs nothing
        self.state = state


def is_torchscript_archive(path: str | Path) -> bool:
    """A zip with a ``*/data.pkl`` next to a ``*/code/`` folder or ``*/constants.pkl``."""
    try:
        if not zipfile.is_zipfile(path):
            return False
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, OSError, ValueError, EOFError):
        return False  # a damaged zip: the reader that follows names the problem
    return any(name.endswith("/data.pkl") for name in names) and any(
        name.endswith("constants.pkl") or "/code/" in name for name in names
    )


def read_torchscript_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """``{dotted name: tensor}`` of every parameter and buffer of the archived module (CPU).

    Raises:
        TorchScriptReadError: not a TorchScript archive, an entry missing or of the wrong
            size, a global other than tensors/storages/containers in ``data.pkl``.
    """
    with zipfile.ZipFile(path) as archive:
        data_pkl = [name for name in archive.namelist() if name.endswith("/data.pkl")]
        if len(data_pkl) != 1:
            raise TorchScriptReadError(f"expected one */data.pkl entry, found {len(data_pkl)}")
        prefix = data_pkl[0][: -len("data.pkl")]
        byteorder = _read_text(archive, prefix + "byteorder") or "little"
        if byteorder.strip() != "little":
            raise TorchScriptReadError(f"tensors are stored {byteorder.strip()}-endian; only little-endian is read")
        _refuse_compressed(archive)
        members = _module_members(archive, prefix)
        unpickler = _DataUnpickler(archive, prefix, archive.read(data_pkl[0]))
        try:
            root = unpickler.load()
        except TorchScriptReadError:
            raise
        except Exception as error:  # noqa: BLE001 - a malformed pickle, named by the caller
            raise TorchScriptReadError(f"cannot parse {data_pkl[0]}: {type(error).__name__}: {error}"[:300]) from None
    if not isinstance(root, ScriptObject):
        raise TorchScriptReadError(f"{data_pkl[0]} does not hold a TorchScript module")
    state: dict[str, torch.Tensor] = {}
    _collect(root, members, state)
    if not state:
        raise TorchScriptReadError("the archived module has no parameters or buffers")
    return state


def _read_text(archive: zipfile.ZipFile, name: str) -> str | None:
    try:
        return _read_bounded(archive, name).decode("utf-8", errors="replace")
    except KeyError:
        return None


def _module_members(archive: zipfile.ZipFile, prefix: str) -> dict[str, tuple[list[str], list[str]]]:
    """``{qualified class name: (parameter names, buffer names)}`` from the archive's code, as text."""
    members = {}
    code = prefix + "code/"
    for name in archive.namelist():
        if not (name.startswith(code) and name.endswith(".py")):
            continue
        module = name[len(code) : -len(".py")].replace("/", ".")
        for match in _CLASS_HEADER.finditer(_read_bounded(archive, name).decode("utf-8", errors="replace")):
            members[f"{module}.{match['name']}"] = (
                re.findall(r'"([^"]*)"', match["params"]),
                re.findall(r'"([^"]*)"', match["buffers"]),
            )
    return members


def _refuse_compressed(archive: zipfile.ZipFile) -> None:
    """TorchScript archives store their pickles and tensor data uncompressed (only code and
    debug entries are deflated, and those are read with a bound): a deflated data entry
    could inflate without bound."""
    for info in archive.infolist():
        if info.compress_type != zipfile.ZIP_STORED and "/code/" not in info.filename \
                and not info.filename.endswith(".debug_pkl"):  # fmt: skip
            raise TorchScriptReadError(f"entry {info.filename} is compressed; archives store their data uncompressed")


def _read_bounded(archive: zipfile.ZipFile, name: str) -> bytes:
    """An entry's bytes, refusing one that inflates past ``MAX_TEXT_BYTES``."""
    with archive.open(name) as entry:
        data = entry.read(MAX_TEXT_BYTES + 1)
    if len(data) > MAX_TEXT_BYTES:
        raise TorchScriptReadError(f"entry {name} inflates past {MAX_TEXT_BYTES} bytes")
    return data


def _collect(root: ScriptObject, members: dict, out: dict[str, torch.Tensor]) -> None:
    """Parameters and buffers of ``root`` then of its submodules, as ``Module.state_dict``
    orders them. Each module is read once (a module shared or containing itself is not
    walked again) and at most ``MAX_MODULE_DEPTH`` deep, so a crafted graph cannot hang or
    exhaust the stack."""
    visited: set[int] = set()
    stack: list[tuple[ScriptObject, str, int]] = [(root, "", 0)]
    while stack:
        obj, prefix, depth = stack.pop()
        if id(obj) in visited:
            continue
        visited.add(id(obj))
        if depth > MAX_MODULE_DEPTH:
            raise TorchScriptReadError(f"the archived modules nest more than {MAX_MODULE_DEPTH} levels deep")
        if not isinstance(obj.state, dict):
            # Written by the class's own __getstate__: only its __setstate__ code could say what
            # the values mean, and that code is not run.
            raise TorchScriptReadError(f"{obj.qualified_name} stores a custom state (its own __getstate__), "
                                       "which cannot be read without running its code")  # fmt: skip
        attributes = obj.state
        declared = members.get(obj.qualified_name)
        names = declared[0] + declared[1] if declared else [k for k, v in attributes.items() if isinstance(v, torch.Tensor)]
        for name in names:
            value = attributes.get(name) if isinstance(name, str) else None
            if isinstance(value, torch.Tensor):
                out[prefix + name] = value
        children = [(value, f"{prefix}{name}.", depth + 1) for name, value in attributes.items()
                    if isinstance(value, ScriptObject)]  # fmt: skip
        stack.extend(reversed(children))  # depth first, in attribute order


class _StorageType:
    def __init__(self, dtype: torch.dtype) -> None:
        self.dtype = dtype


class _DataUnpickler(pickle.Unpickler):
    """Resolves only what a module's data needs; tensors are rebuilt from the archive's bytes."""

    def __init__(self, archive: zipfile.ZipFile, prefix: str, payload: bytes) -> None:
        super().__init__(io.BytesIO(payload))
        self.archive, self.prefix = archive, prefix
        self.storages: dict[str, torch.Tensor] = {}
        self.script_classes: dict[str, type] = {}

    def find_class(self, module: str, name: str):
        if module == "torch._utils" and name in ("_rebuild_tensor", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if module == "torch._utils" and name == "_rebuild_parameter":
            return _rebuild_parameter
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        if module == "torch.jit._pickle" and name in ("build_intlist", "build_tensorlist", "build_doublelist",
                                                      "build_boollist"):  # fmt: skip
            return list
        if module == "torch.jit._pickle" and name == "restore_type_tag":
            return _restore_type_tag
        if module == "__torch__" or module.startswith("__torch__."):
            qualified = f"{module}.{name}"
            if qualified not in self.script_classes:
                self.script_classes[qualified] = type(name, (ScriptObject,), {"qualified_name": qualified})
            return self.script_classes[qualified]
        raise TorchScriptReadError(f"refusing the global {module}.{name} in data.pkl (only tensors and containers are read)")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage" and isinstance(pid[1], _StorageType)):
            raise TorchScriptReadError(f"unexpected persistent id {pid!r:.80} in data.pkl")
        _, storage_type, key, _location, numel = pid
        if key not in self.storages:
            self.storages[key] = self._read_storage(str(key), storage_type.dtype, int(numel))
        return self.storages[key]

    def _read_storage(self, key: str, dtype: torch.dtype, numel: int) -> torch.Tensor:
        name = f"{self.prefix}data/{key}"
        try:
            info = self.archive.getinfo(name)
        except KeyError:
            raise TorchScriptReadError(f"entry {name} (a tensor's data) is missing") from None
        itemsize = torch.empty((), dtype=dtype).element_size()
        if numel < 0 or info.file_size != numel * itemsize:
            raise TorchScriptReadError(f"entry {name} holds {info.file_size} bytes; its tensor declares "
                                       f"{numel} x {itemsize}")  # fmt: skip
        raw = bytearray(self.archive.read(name))
        return torch.frombuffer(raw, dtype=dtype) if raw else torch.empty(0, dtype=dtype)


def _rebuild_tensor(storage: torch.Tensor, storage_offset: int, size, stride, *_ignored) -> torch.Tensor:
    """A view of the flat storage (bounds are checked by ``as_strided``)."""
    if not isinstance(storage, torch.Tensor):
        raise TorchScriptReadError("a tensor's storage is not a persistent storage record")
    if math.prod(size) > storage.numel():  # a broadcast view would multiply memory on the first copy
        raise TorchScriptReadError(f"a tensor of shape {tuple(size)} claims more elements than its storage holds")
    try:
        return storage.as_strided(tuple(size), tuple(stride), int(storage_offset))
    except RuntimeError as error:
        raise TorchScriptReadError(f"a tensor does not fit its storage: {error}") from error


def _rebuild_parameter(data: torch.Tensor, *_ignored) -> torch.Tensor:
    return data


def _restore_type_tag(value, _type_string):
    return value
