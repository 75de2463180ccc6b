"""Hostile weight files, small on disk whatever they declare: the reproducers of
``test_hostile_weights.py`` and the seeded generator its fuzz test runs (``fuzz_weights.py``).

Every writer returns the path it wrote; none allocates more than a few megabytes.
"""
from __future__ import annotations

import io
import json
import pickle
import random
import struct
import sys
import types
import zipfile
from pathlib import Path

import torch

# -- safetensors --------------------------------------------------------------------------


def write_safetensors_raw(path: Path, header: dict, data: bytes) -> Path:
    """A safetensors file from a header dict written as given (no validation) and data bytes."""
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    return path


def tensor_header(entries: dict[str, tuple[str, list[int], int, int]], metadata: dict | None = None) -> dict:
    header = {k: {"dtype": d, "shape": s, "data_offsets": [b, e]} for k, (d, s, b, e) in entries.items()}
    if metadata is not None:
        header["__metadata__"] = metadata
    return header


# -- torch.save zips ----------------------------------------------------------------------


def rewrite_zip(source: Path, target: Path, compress: bool = False, edit=None) -> Path:
    """``source`` (a zip) copied to ``target`` with every entry deflated (``compress``) or
    passed through ``edit(name, data) -> data``."""
    with zipfile.ZipFile(source) as original, zipfile.ZipFile(target, "w") as out:
        for info in original.infolist():
            data = original.read(info.filename)
            if edit is not None:
                data = edit(info.filename, data)
            out.writestr(info.filename, data, zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED)
    return target


def deflated_zero_checkpoint(path: Path, elements: int = 1_000_000) -> Path:
    """A ``torch.save`` state dict whose one tensor (``elements`` zeros) is stored deflated:
    a few kilobytes that inflate to ``4 * elements`` bytes."""
    plain = path.with_suffix(".plain")
    torch.save({"weight": torch.zeros(elements)}, plain)
    rewrite_zip(plain, path, compress=True)
    plain.unlink()
    return path


# -- TorchScript archives -----------------------------------------------------------------


class _FakeTorchModule(types.ModuleType):
    """``__torch__`` for the pickler: classes it pickles by name, as TorchScript's are."""


def _script_class(name: str) -> type:
    module = sys.modules.setdefault("__torch__", _FakeTorchModule("__torch__"))
    cls = getattr(module, name, None)
    if cls is None:
        cls = type(name, (), {"__module__": "__torch__"})
        setattr(module, name, cls)
    return cls


class _ArchivePickler(pickle.Pickler):
    """Pickles tensors' storages as TorchScript's persistent ids (``("storage", type, key, "cpu", n)``)."""

    def __init__(self, stream, storages: dict):
        super().__init__(stream, protocol=2)
        self.storages = storages

    def persistent_id(self, obj):
        if isinstance(obj, torch.storage.TypedStorage):
            key = str(len(self.storages))
            self.storages[key] = obj
            return ("storage", torch.FloatStorage, key, "cpu", obj.size())
        return None


def write_script_archive(path: Path, root, name: str = "archive") -> Path:
    """A TorchScript-shaped zip (``data.pkl``, ``constants.pkl``, ``data/<key>``) holding ``root``."""
    storages: dict = {}
    stream = io.BytesIO()
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 60_000))
    try:
        _ArchivePickler(stream, storages).dump(root)
    finally:
        sys.setrecursionlimit(limit)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(f"{name}/data.pkl", stream.getvalue())
        archive.writestr(f"{name}/constants.pkl", pickle.dumps((), protocol=2))
        archive.writestr(f"{name}/byteorder", "little")
        for key, storage in storages.items():
            archive.writestr(f"{name}/data/{key}", bytes(storage.untyped()))
    return path


def script_module(**attributes):
    obj = _script_class("M")()
    obj.__dict__.update(attributes)
    return obj


def self_containing_archive(path: Path) -> Path:
    module = script_module(weight=torch.ones(2))
    module.__dict__["child"] = module
    return write_script_archive(path, module)


def chain_archive(path: Path, depth: int) -> Path:
    """Modules nested ``depth`` deep, one tensor at the bottom."""
    module = script_module(weight=torch.ones(2))
    for _ in range(depth):
        module = script_module(child=module)
    return write_script_archive(path, module)


def shared_archive(path: Path, depth: int) -> Path:
    """Each level holds the next level twice (``a`` and ``b``): ``2 ** depth`` paths to the bottom."""
    module = script_module(weight=torch.ones(2))
    for _ in range(depth):
        module = script_module(a=module, b=module)
    return write_script_archive(path, module)


# -- the fuzz generator -------------------------------------------------------------------


def hostile_files(folder: Path, rng: random.Random, seeds: dict[str, Path], bait: Path) -> list[Path]:
    """A handful of hostile files derived from the valid ``seeds`` (name -> file) by random
    edits: headers, offsets, shapes, metadata (with ``bait``, a path outside ``folder``,
    and hub names), zip entries, strides, pickle bytes."""
    written = []
    for index in range(6):
        name = rng.choice(sorted(seeds))
        source = seeds[name]
        target = folder / f"{index}-{name}"
        mutate = rng.choice(_MUTATIONS)
        mutate(source, target, rng, bait)
        if target.exists():
            written.append(target)
    return written


def _flip_bytes(source: Path, target: Path, rng: random.Random, bait: Path) -> None:
    data = bytearray(source.read_bytes())
    for _ in range(rng.randint(1, 16)):
        position = rng.randrange(len(data))
        data[position] = rng.randrange(256)
    target.write_bytes(bytes(data))


def _truncate(source: Path, target: Path, rng: random.Random, bait: Path) -> None:
    data = source.read_bytes()
    target.write_bytes(data[: rng.randrange(len(data))])


def _safetensors_header_edit(source: Path, target: Path, rng: random.Random, bait: Path) -> None:
    data = source.read_bytes()
    if len(data) < 8 or data[8:9] != b"{":
        return _flip_bytes(source, target, rng, bait)
    length = struct.unpack("<Q", data[:8])[0]
    header, body = json.loads(data[8 : 8 + length]), data[8 + length :]
    metadata = header.get("__metadata__", {})
    keys = [k for k in header if k != "__metadata__"]
    choice = rng.randrange(7)
    if choice == 0 and keys:  # offsets past the end, reversed or overlapping
        entry = header[rng.choice(keys)]
        entry["data_offsets"] = rng.choice([[0, len(body) * 4], [8, 0], [0, 0], [-1, 4], [2**63, 2**64]])
    elif choice == 1 and keys:  # shapes that overflow or lie
        header[rng.choice(keys)]["shape"] = rng.choice([[2**62, 2**62], [10**12], [-1], ["x"], [1] * 100])
    elif choice == 2 and "config" in metadata:  # config numbers that size allocations
        config = json.loads(metadata["config"])
        for key, value in list(config.items()):
            if isinstance(value, int) and not isinstance(value, bool) and rng.random() < 0.5:
                config[key] = rng.choice([10**9, 3 * 10**8, -5, 2**63])
            elif isinstance(value, dict) and rng.random() < 0.5:
                config[key] = {k: rng.choice([10**9, "x", None]) for k in value}
        if rng.random() < 0.3:
            config[rng.choice(["unknown", "_target_", "bins"])] = rng.choice(["os.system", 10**10, [1] * 3])
        metadata["config"] = json.dumps(config)
    elif choice == 3 and "config" in metadata:  # places and hubs
        config = json.loads(metadata["config"])
        config[rng.choice(["clip_weights", "encoder", "backbone", "gpt2"])] = rng.choice([
            str(bait), "timm:hf-hub:someone/model", "open_clip:hf-hub:someone/model", f"local-dir:{bait.parent}",
            "../../etc/passwd"])  # fmt: skip
        metadata["config"] = json.dumps(config)
    elif choice == 4:  # system, kind and format fields
        metadata[rng.choice(["system", "model", "format", "score_range", "training_data"])] = rng.choice(
            ["mtpg", "cgiaa", "aesnet", "expert", "pretrain", "scorer", "nonsense", "{", "[1e400]", str(bait)])
    elif choice == 5:  # deeply nested JSON metadata
        metadata["config"] = "[" * 100_000 + "]" * 100_000
    else:  # dtype changes
        if keys:
            header[rng.choice(keys)]["dtype"] = rng.choice(["F16", "I64", "BOOL", "Q4", ""])
    header["__metadata__"] = metadata
    write_safetensors_raw(target, header, body)


def _zip_edit(source: Path, target: Path, rng: random.Random, bait: Path) -> None:
    if not zipfile.is_zipfile(source):
        return _flip_bytes(source, target, rng, bait)

    def edit(name: str, data: bytes) -> bytes:
        if name.endswith(".pkl") and rng.random() < 0.5:
            data = bytearray(data)
            for _ in range(rng.randint(1, 8)):
                data[rng.randrange(len(data))] = rng.randrange(256)
            return bytes(data)
        if "/data/" in name and rng.random() < 0.3:
            return data[: rng.randrange(len(data) + 1)]
        return data

    rewrite_zip(source, target, compress=rng.random() < 0.3, edit=edit)


def _views_and_records(source: Path, target: Path, rng: random.Random, bait: Path) -> None:
    """A torch.save file of odd tensors and training-checkpoint records."""
    base = torch.zeros(1)
    size = rng.choice([(10**5, 10**5), (4096, 4096), (3,)])
    tensor = base.expand(*size) if len(size) == 2 else base[: size[0]]
    obj = rng.choice([
        {"weight": tensor},
        {"model": {"w": tensor}, "optimizer": {}, "step": 1, "system": rng.choice(["mtpg", "cgiaa", "aesnet", "x"]),
         "model_kind": rng.choice(["scorer", "expert", "pretrain"]), "model_config": {"bins": 3 * 10**8, "clip_weights": str(bait)},
         "config": {"task": {"model": {"_target_": "os.system", "clip_weights": str(bait)}}}},
        {"model": {}, "optimizer": {}, "step": 0, "config": {"model": {"_target_": "mtpg_aiaa.models.mtpg.build_mtpg_model",
                                                                   "backbone": {"vocab_size": 10**9}}}},
    ])  # fmt: skip
    torch.save(obj, target)


_MUTATIONS = (_flip_bytes, _truncate, _safetensors_header_edit, _safetensors_header_edit, _zip_edit, _views_and_records)
