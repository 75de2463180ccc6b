"""The low-level readers of weight files, each bounded before it allocates.

Rules every reader here keeps (issue 21), so that a small crafted file can never make the
process allocate far more than the file holds:

- no declared size larger than the bytes the file holds (a safetensors range, a zip entry,
  a legacy pickle's storage record);
- no tensor view larger than its storage (an ``expand``-ed zero-stride view would turn into
  gigabytes on the first ``isnan`` or copy);
- compressed zip entries are refused (``torch.save`` stores entries uncompressed: a deflated
  entry is a zip bomb, not a checkpoint);
- the total a file may make us allocate is a budget derived from its size
  (:func:`allocation_budget`; ``MTPG_AIAA_WEIGHTS_BUDGET_BYTES`` raises it).

Every refusal is a :class:`CheckpointError` (one line, naming the file); what is not an
input problem (a bug) keeps its traceback.
"""
from __future__ import annotations

import json
import math
import os
import re
import struct
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch

from ..errors import CheckpointError

# safetensors' own header limit; a larger header is refused before it is read
MAX_SAFETENSORS_HEADER = 100_000_000
BUDGET_SETTING = "MTPG_AIAA_WEIGHTS_BUDGET_BYTES"
_SAFETENSORS_DTYPES = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1,
    "U16": 2, "U32": 4, "U64": 8, "F8_E4M3": 1, "F8_E5M2": 1, "C64": 8,
}  # fmt: skip


# What the zipfile module raises for a damaged or unusual archive (an unknown zip version or
# compression method is NotImplementedError)
ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, OSError, ValueError, EOFError)


def allocation_budget(path: str | Path) -> int:
    """Bytes a weights file may make us allocate: twice its size plus 64 MiB (room for
    fp32 copies of an fp16 file and small derived buffers), or the
    ``MTPG_AIAA_WEIGHTS_BUDGET_BYTES`` setting when that is larger."""
    derived = 2 * Path(path).stat().st_size + (64 << 20)
    setting = os.environ.get(BUDGET_SETTING, "").strip()
    if setting:
        if not setting.isdigit():
            raise CheckpointError(f"{BUDGET_SETTING}={setting!r} is not a number of bytes")
        return max(derived, int(setting))
    return derived


def check_weights_file(path: Path) -> None:
    """A weights file that exists, can be opened and is not empty, or a :class:`CheckpointError`."""
    if not path.is_file():
        reason = "is a directory, not a file" if path.is_dir() else "not found"
        raise CheckpointError(f"checkpoint file {reason}: {path}")
    try:
        size = path.stat().st_size
        with open(path, "rb"):
            pass
    except OSError as error:
        raise CheckpointError(f"cannot open {path}: {error.strerror or error}") from None
    if size == 0:
        raise CheckpointError(f"checkpoint file {path} is empty (0 bytes): an interrupted download or copy?")


# -- safetensors ----------------------------------------------------------------------------
def read_safetensors_header(path: str | Path) -> tuple[dict[str, str], dict[str, tuple[str, tuple[int, ...]]]]:
    """``(metadata, {key: (dtype, shape)})`` of a safetensors file, every field checked
    against the bytes the file holds before anything is allocated: the header length, the
    JSON, each dtype, each shape's byte count against its range, ranges inside the data and
    not overlapping."""
    path = Path(path)
    check_weights_file(path)
    size = path.stat().st_size
    with open(path, "rb") as handle:
        head = handle.read(8)
        if len(head) < 8:
            raise CheckpointError(f"{path} is not a readable safetensors file: shorter than its 8-byte header length")
        length = struct.unpack("<Q", head)[0]
        if length > min(size - 8, MAX_SAFETENSORS_HEADER):
            raise CheckpointError(f"{path} is not a readable safetensors file: its header claims {length} bytes "
                                  f"of a {size}-byte file (truncated?)")  # fmt: skip
        raw = handle.read(length)
    try:
        header = json.loads(raw)
    except (ValueError, RecursionError) as error:
        raise CheckpointError(f"{path} is not a readable safetensors file: its header is not JSON ({error})") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path} is not a readable safetensors file: its header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise CheckpointError(f"{path}: its safetensors metadata is not a map of strings")
    data_size = size - 8 - length
    tensors, ranges = {}, []
    for key, entry in header.items():
        dtype, shape, offsets = _header_entry(path, key, entry)
        begin, end = offsets
        if not 0 <= begin <= end <= data_size:
            raise CheckpointError(f"{path}: tensor {key!r} lies at bytes {begin}..{end} of {data_size} "
                                  "(truncated or corrupted)")  # fmt: skip
        if math.prod(shape) * _SAFETENSORS_DTYPES[dtype] != end - begin:
            raise CheckpointError(f"{path}: tensor {key!r} of shape {list(shape)} ({dtype}) does not fill its "
                                  f"{end - begin}-byte range")  # fmt: skip
        tensors[key] = (dtype, shape)
        ranges.append((begin, end, key))
    ranges.sort()
    for (_, end, first), (begin, _, second) in zip(ranges, ranges[1:]):
        if begin < end:
            raise CheckpointError(f"{path}: tensors {first!r} and {second!r} overlap in the file")
    return dict(metadata), tensors


def _header_entry(path: Path, key: str, entry) -> tuple[str, tuple[int, ...], tuple[int, int]]:
    if not isinstance(entry, dict):
        raise CheckpointError(f"{path}: header entry {key!r} is not an object")
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if dtype not in _SAFETENSORS_DTYPES:
        raise CheckpointError(f"{path}: tensor {key!r} has an unknown dtype {dtype!r:.40}")
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape) or len(shape) > 64:
        raise CheckpointError(f"{path}: tensor {key!r} has a malformed shape {shape!r:.80}")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(type(o) is int for o in offsets)):
        raise CheckpointError(f"{path}: tensor {key!r} has malformed data_offsets {offsets!r:.80}")
    return dtype, tuple(shape), (offsets[0], offsets[1])


def read_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    """A safetensors file's tensors (CPU), after :func:`read_safetensors_header` checked it."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    read_safetensors_header(path)
    try:
        return dict(load_file(str(path), device="cpu"))
    except (SafetensorError, OSError) as error:  # the header passed: a read error of the data itself
        raise CheckpointError(f"{path} is not a readable safetensors file: {error}") from None


# -- PyTorch files --------------------------------------------------------------------------
MAX_TEXT_ENTRY = 16 << 20  # a TorchScript archive's compressed code entry, read as text


def check_torch_zip(path: Path, compressed_text: bool = False) -> None:
    """A ``torch.save`` zip whose entries are stored uncompressed, each inside the file, in
    all no more than :func:`allocation_budget`: refused before ``torch.load`` inflates anything.

    ``compressed_text``: a TorchScript archive, whose ``code/`` and debug entries
    ``torch.jit.save`` deflates; those may be compressed up to ``MAX_TEXT_ENTRY`` bytes each
    (read with a bounded reader), never its pickles or tensor data."""
    size, budget = path.stat().st_size, allocation_budget(path)
    try:
        with zipfile.ZipFile(path) as archive:
            entries = archive.infolist()
    except ZIP_ERRORS as error:
        raise CheckpointError(f"cannot read {path}: a damaged zip archive ({error})") from None
    total = 0
    for info in entries:
        if compressed_text and is_text_entry(info.filename) and info.file_size <= MAX_TEXT_ENTRY:
            continue
        if info.compress_type != zipfile.ZIP_STORED:
            raise CheckpointError(f"{path}: entry {info.filename!r} is compressed; checkpoints store their entries "
                                  "uncompressed, so it is refused (a compressed entry can inflate without bound)")  # fmt: skip
        if info.file_size != info.compress_size or info.header_offset + info.compress_size > size:
            raise CheckpointError(f"{path}: entry {info.filename!r} declares {info.file_size} bytes that the "
                                  f"{size}-byte file does not hold")  # fmt: skip
        total += info.file_size
    if total > budget:
        raise CheckpointError(f"{path}: its entries declare {total} bytes, more than the file's budget of {budget} "
                              f"(set {BUDGET_SETTING} to raise it)")  # fmt: skip


def is_text_entry(name: str) -> bool:
    """A TorchScript archive's code or debug entry (``*/code/**``, ``*.debug_pkl``), never read as data."""
    return "/code/" in name or name.endswith(".debug_pkl")


def check_legacy_pickle(path: Path) -> None:
    """A legacy (non-zip) ``torch.save`` file, bounded before ``torch.load`` allocates: its
    storages are allocated from element counts declared in the pickle, so every integer the
    pickle holds (memo references counted again) may sum to no more than
    :func:`allocation_budget` (a storage is at least one byte an element), and each storage
    record's own count (8 bytes before its data) must fit in the bytes left."""
    import pickletools

    size, budget = path.stat().st_size, allocation_budget(path)
    ints = ("INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4")
    declared = 0
    with open(path, "rb") as handle:
        try:
            for index in range(4):  # magic number, protocol version, system info, the object
                memo, last = {}, None
                for opcode, argument, _pos in pickletools.genops(handle):
                    value = argument if opcode.name in ints and isinstance(argument, int) else None
                    if opcode.name in ("BINPUT", "LONG_BINPUT", "PUT"):
                        memo[argument] = last
                    elif opcode.name == "MEMOIZE":
                        memo[len(memo)] = last
                    elif opcode.name in ("BINGET", "LONG_BINGET", "GET"):
                        value = memo.get(argument)
                    if index == 3 and isinstance(value, int):  # the object's sizes, offsets and element counts
                        declared += abs(value)
                    if opcode.name not in ("BINPUT", "LONG_BINPUT", "PUT", "MEMOIZE"):
                        last = value
                if declared > budget:
                    break
            keys = [] if declared > budget else [
                argument for opcode, argument, _pos in pickletools.genops(handle)
                if opcode.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE", "BINUNICODE8")]  # fmt: skip
        except (ValueError, EOFError, UnicodeDecodeError, struct.error) as error:
            raise CheckpointError(f"cannot read {path}: not a PyTorch file ({str(error)[:200]})") from None
        if declared > budget:
            raise CheckpointError(f"{path}: its pickle declares sizes past the file's budget of {budget} bytes "
                                  f"(set {BUDGET_SETTING} to raise it)")  # fmt: skip
        for key in keys:
            head = handle.read(8)
            if len(head) < 8:
                raise CheckpointError(f"cannot read {path}: the file is truncated (storage {key!r:.40} missing)")
            count = struct.unpack("<q", head)[0]
            if count < 0 or count > size - handle.tell():
                raise CheckpointError(f"{path}: storage {key!r:.40} declares {count} elements; the file holds "
                                      f"{size - handle.tell()} more bytes")  # fmt: skip
            handle.seek(count, os.SEEK_CUR)  # the element size is not in the record: at least one byte each


def load_weights_only(path: Path):
    """``torch.load(weights_only=True)`` of a file bounded first (:func:`check_torch_zip`,
    :func:`check_legacy_pickle`), its tensors then checked (:func:`check_tensor_views`);
    errors name the file and never advise turning the weights-only loader off (which would
    run the code the file carries)."""
    path = Path(path)
    check_weights_file(path)
    if zipfile.is_zipfile(path):
        check_torch_zip(path)
    else:
        check_legacy_pickle(path)
    try:
        with open(path, "rb") as handle:  # by content: torch.load would take a ".safetensors" name for safetensors
            obj = torch.load(handle, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - torch.load's errors for a bad file are of many types; re-raised naming it
        if isinstance(error, (MemoryError, KeyboardInterrupt)):
            raise
        raise CheckpointError(f"cannot read {path}: {describe_load_error(error)}") from None
    check_tensor_views(obj, path)
    return obj


def check_tensor_views(obj, path: str | Path, depth: int = 0) -> None:
    """No tensor anywhere in ``obj`` (nested dicts/lists, at most 32 deep) is a view larger
    than its storage: a zero-stride or overlapping view of a small storage is refused before
    ``isnan`` or a copy turns it into a dense tensor."""
    if depth > 32:
        raise CheckpointError(f"{path}: its objects nest more than 32 levels deep")
    if isinstance(obj, torch.Tensor):
        nbytes = obj.numel() * obj.element_size()
        if nbytes > obj.untyped_storage().nbytes():
            raise CheckpointError(f"{path}: a tensor of shape {list(obj.shape)} is a view larger than its "
                                  f"{obj.untyped_storage().nbytes()}-byte storage (zero or overlapping strides)")  # fmt: skip
    elif isinstance(obj, Mapping):
        for value in obj.values():
            check_tensor_views(value, path, depth + 1)
    elif isinstance(obj, (list, tuple)):
        for value in obj:
            check_tensor_views(value, path, depth + 1)


def describe_load_error(error: Exception) -> str:
    """The cause of a failed weights-only load, without PyTorch's advice to unpickle code."""
    message = str(error)
    refused_global = re.search(r"GLOBAL ([\w.]+)", message)
    if refused_global:
        return (f"it pickles the Python object {refused_global.group(1)}, not only tensors; such files can run code "
                "when loaded, so they are refused. Re-save the weights as a plain state dict of tensors "
                "(torch.save(model.state_dict(), ...)) or as .safetensors where the file is trusted")  # fmt: skip
    if isinstance(error, EOFError) or "central directory" in message or "PytorchStreamReader" in message:
        return f"the file is truncated or not a PyTorch file ({type(error).__name__}: {message.strip() or 'end of file'})"
    # PyTorch's paragraph suggests turning the weights-only loader off, i.e. running the file's code: never passed on.
    advice = ("weights_only", "trusted source", "documentation of torch.load")
    kept = [line.strip() for line in message.splitlines() if line.strip() and not any(a in line for a in advice)]
    return f"{type(error).__name__}: {'; '.join(kept) or 'refused by the weights-only loader'}"[:500]
