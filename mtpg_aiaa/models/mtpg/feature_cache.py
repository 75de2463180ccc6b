"""Frozen-backbone feature cache: Long-CLIP features computed once, stored on disk, reused.

When no trainable parameter reaches ``MTPGAIAA.encode`` (the backbone is frozen), every
epoch would recompute the same image and description features. This module stores
``encode``'s output per (image, description) so that training and validation run the
fusion and level prompts alone, with exactly the losses of the uncached path
(``model.score_features`` on the same features).

Layout (see docs/feature_cache.md)::

    <cache_dir>/<kind>-<key>/features.json                      what produced the entries
    <cache_dir>/<kind>-<key>/<2-char prefix>/<entry>.safetensors  one (image, description)

``<key>`` hashes the backbone weights (content), the preprocessing, the tokenizer, the
features the fusion reads, the compute precision and the storage dtype; ``<entry>``
hashes the image's path relative to the image root, its size and mtime_ns, and the
description text. Token features are stored cut at the description's own EOT and padded
again at collate time. This module is model-side: it never imports the training engine.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm.auto import tqdm

from mtpg_aiaa import __version__
from mtpg_aiaa.fileio import atomic_write
from mtpg_aiaa.data import AestheticsDataset, BadInputError, collate_samples
from mtpg_aiaa.eval.predict import predict

log = logging.getLogger(__name__)

FORMAT_NAME = "mtpg-aiaa-features"
FORMAT_VERSION = 1  # bump when encode()'s meaning or the entry layout changes
MANIFEST_NAME = "features.json"
STORAGE_DTYPES = {"float32": torch.float32, "float16": torch.float16}
# encode() marks description padding with this mask; entries store text_tokens cut at
# each description's EOT instead, and collate_features rebuilds the mask.
PADDING_KEY, TEXT_TOKENS_KEY = "text_padding", "text_tokens"


class FeatureCacheError(RuntimeError):
    """An entry is missing or unreadable; the message names the file and the fix."""


# -- keys --------------------------------------------------------------------------
def backbone_fingerprint(backbone: nn.Module, workers: int | None = None) -> str:
    """A content hash (hex) of every state-dict tensor of ``backbone``: names, dtypes,
    shapes and raw bytes.

    Tensors are hashed in parallel threads (hashlib releases the GIL on large buffers)
    and the per-tensor digests are hashed in name order, so the result does not depend
    on the thread count. Long-CLIP-L (1.7 GB in fp32) takes a few seconds on one core.
    """
    state = backbone.state_dict()
    names = sorted(state)

    def digest(name: str) -> bytes:
        tensor = state[name].detach().cpu().contiguous()
        raw = tensor.reshape(-1).view(torch.uint8).numpy()  # bytes of any dtype, bf16 included
        return hashlib.blake2b(raw, digest_size=16).digest()

    with ThreadPoolExecutor(max_workers=workers or min(8, os.cpu_count() or 1)) as pool:
        digests = list(pool.map(digest, names))
    combined = hashlib.blake2b(digest_size=32)
    for name, tensor_digest in zip(names, digests):
        tensor = state[name]
        combined.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        combined.update(tensor_digest)
    return combined.hexdigest()


def text_digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def entry_key(relative_path: str, size: int, mtime_ns: int, description_digest: str | None) -> str:
    """The entry of one image file (path relative to the image root, size, mtime_ns) and
    description (its digest; None when the features do not read text)."""
    identity = json.dumps([relative_path, size, mtime_ns, description_digest])
    return hashlib.blake2b(identity.encode(), digest_size=16).hexdigest()


def _probe_inputs(model: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """One blank image ``[1, 3, S, S]`` and one short description ``[1, 248]`` on the model's device."""
    device = next(model.parameters()).device
    size = model.backbone.arch.image_size
    return torch.zeros(1, 3, size, size, device=device), model.tokenizer(["a painting"]).to(device)


def trainable_encode_parameters(model: nn.Module) -> list[str]:
    """Names of the trainable parameters that ``model.encode`` reads (empty: its features
    can be cached).

    A trainable backbone parameter is reported without running anything; otherwise a
    one-sample ``encode`` with gradients on shows whether any other trainable parameter
    (a future adapter, say) reaches the features. Parameters that only the fusion or the
    level prompts read are free to train.
    """
    backbone = [f"backbone.{n}" for n, p in model.backbone.named_parameters() if p.requires_grad]
    if backbone:
        return backbone
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not named:
        return []
    with torch.enable_grad():
        outputs = [v for v in model.encode(*_probe_inputs(model)).values() if v.requires_grad]
        if not outputs:
            return []
        total = sum(v.float().sum() for v in outputs)
        grads = torch.autograd.grad(total, [p for _, p in named], allow_unused=True)
    return [n for (n, _), g in zip(named, grads) if g is not None]


# -- the cache ---------------------------------------------------------------------
@dataclass
class BuildReport:
    """What one ``FeatureCache.build`` call did.

    ``keys[i]`` is the entry of source row ``i`` (None: its image file is missing and the
    source skips bad images). ``reused``/``built`` count the distinct entries this rank
    owns (all of them with one rank); ``skipped``
    lists the unreadable images left out (``on_bad_image=skip``).
    """

    keys: list[str | None]
    reused: int = 0
    built: int = 0
    skipped: list[dict] = field(default_factory=list)
    seconds: float = 0.0


class FeatureCache:
    """Features of ``model.encode`` for (image, description) pairs, stored under ``root``.

    Args:
        root: the cache directory (``paths.cache_dir``); one subdirectory per key.
        model: an MTPG-AIAA model whose ``encode`` reads no trainable parameter.
        dtype: storage dtype, ``float32`` (exact) or ``float16`` (half the disk;
            features are rounded, so losses differ slightly from the uncached path).
        autocast_dtype: the autocast dtype training runs the backbone under (None: fp32),
            so cached features equal what the uncached path computes.

    The backbone is hashed once, here; build the cache again after changing weights.
    """

    def __init__(self, root: str | os.PathLike, model: nn.Module, dtype: str = "float32",
                 autocast_dtype: torch.dtype | None = None):  # fmt: skip
        if dtype not in STORAGE_DTYPES:
            raise ValueError(f"feature cache dtype must be one of {sorted(STORAGE_DTYPES)}, got {dtype!r}")
        self.model, self.dtype, self.autocast_dtype = model, dtype, autocast_dtype
        self.device = next(model.parameters()).device
        preprocess, size = model.config.preprocess, model.backbone.arch.image_size
        self.transform = model.build_transform(train=False)  # deterministic: augmented views cannot be cached
        self.feature_shapes = self._probe_shapes()
        self.stored_names = [name for name in self.feature_shapes if name != PADDING_KEY]
        self.reads_text = "text" in self.feature_shapes
        self.identity = {
            "format": FORMAT_NAME, "version": FORMAT_VERSION,
            "backbone_blake2b": backbone_fingerprint(model.backbone),
            "features": dict(sorted(self.feature_shapes.items())),  # names and per-sample shapes
            "preprocess": {"name": preprocess, "image_size": size, "transform": repr(self.transform)},
            "tokenizer": {"context_length": model.tokenizer.context_length},
            "compute": str(autocast_dtype or torch.float32).removeprefix("torch."),
            "storage_dtype": dtype,
        }  # fmt: skip
        kind = "tokens" if TEXT_TOKENS_KEY in self.feature_shapes else "pooled" if self.reads_text else "image"
        digest = hashlib.blake2b(json.dumps(self.identity, sort_keys=True).encode(), digest_size=8).hexdigest()
        self.key_dir = Path(root) / f"{kind}-{digest}"
        self._file_mode = 0o666 & ~_current_umask()

    def _probe_shapes(self) -> dict[str, list[int]]:
        """Per-sample shape of each feature ``encode`` returns (``-1``: description length)."""
        with torch.inference_mode():
            features = self.model.encode(*_probe_inputs(self.model))
        shapes = {name: list(value.shape[1:]) for name, value in features.items()}
        if TEXT_TOKENS_KEY in shapes:
            shapes[TEXT_TOKENS_KEY][0] = -1
        return shapes

    # -- entries -------------------------------------------------------------------
    def entry_path(self, key: str) -> Path:
        return self.key_dir / key[:2] / f"{key}.safetensors"

    def entry_keys(self, source: AestheticsDataset) -> list[str | None]:
        """The entry of every row of ``source`` (one ``stat`` per image file)."""
        keys: list[str | None] = []
        for index, (name, description) in enumerate(zip(source.image_names, source.descriptions)):
            path = source.image_root / name
            try:
                stat = path.stat()
            except OSError as error:
                if source.on_bad_image == "error":
                    raise BadInputError(f"Image file {path} cannot be read ({error}); table row {index}") from error
                keys.append(None)  # left out below, as the uncached path skips it
                continue
            described = text_digest(description) if self.reads_text else None
            keys.append(entry_key(Path(name).as_posix(), stat.st_size, stat.st_mtime_ns, described))
        return keys

    def read_entry(self, key: str) -> dict[str, torch.Tensor]:
        """One entry's features in fp32 (``text_tokens`` cut at the description's EOT)."""
        return read_entry(self.entry_path(key), self.stored_names, self.key_dir)

    # -- building ------------------------------------------------------------------
    def build(self, source: AestheticsDataset, batch_size: int = 16, num_workers: int = 0,
              rank: int = 0, world_size: int = 1, progress: bool = True) -> BuildReport:  # fmt: skip
        """Encode every entry of ``source`` not yet on disk, ``batch_size`` images at a time.

        Each batch's entries are written (atomically) as soon as it is encoded, so an
        interrupted build loses at most one batch and the next call continues. With
        ``world_size > 1`` rank ``r`` owns the distinct entries ``r, r + world_size, ...``
        in table order and builds those of its own that are missing. Ownership is read
        from the table, never from the disk, so ranks that look at the directory at
        different moments still split the work without gaps or overlap; the caller must
        wait for every rank before reading.
        """
        if repr(source.transform) != repr(self.transform):
            raise ValueError("the feature cache encodes images with the deterministic eval transform; "
                             f"source has {source.transform!r}")  # fmt: skip
        start = time.perf_counter()
        keys = self.entry_keys(source)
        first_row: dict[str, int] = {}
        for row, key in enumerate(keys):
            if key is not None:
                first_row.setdefault(key, row)
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
        owned = list(first_row)[rank::world_size]
        missing = [key for key in owned if not self.entry_path(key).is_file()]
        rows = [first_row[key] for key in missing]
        report = BuildReport(keys, reused=len(owned) - len(missing))
        if rows:
            self._write_manifest()
            report.built, report.skipped = self._encode_rows(source, rows, keys, batch_size, num_workers, progress)
        report.seconds = time.perf_counter() - start
        return report

    def _encode_rows(self, source: AestheticsDataset, rows: list[int], keys: list[str | None],
                     batch_size: int, num_workers: int, progress: bool) -> tuple[int, list[dict]]:  # fmt: skip
        """Encode and write the entries of ``rows``; returns (entries written, skipped images)."""
        loader = DataLoader(Subset(source, rows), batch_size=batch_size, shuffle=False,
                            num_workers=num_workers, collate_fn=collate_samples)  # fmt: skip
        built, skipped = 0, []
        was_training = self.model.training
        self.model.eval()  # as validation; Long-CLIP has no dropout, so training mode gives the same features
        try:
            bar = tqdm(total=len(rows), desc="feature cache", unit="img", disable=not progress, dynamic_ncols=True)
            with bar:
                for batch in loader:
                    skipped.extend(batch["skipped"])
                    if len(batch["index"]):
                        features = self._encode(batch)
                        for i, row in enumerate(batch["index"].tolist()):  # source rows, not Subset positions
                            self._write_entry(keys[row], sample_features(features, i), source.image_names[row])
                            built += 1
                    bar.update(len(batch["index"]) + len(batch["skipped"]))
        finally:
            self.model.train(was_training)
        return built, skipped

    def _encode(self, batch: dict) -> dict[str, torch.Tensor]:
        images = batch["image"].to(self.device, non_blocking=True)
        tokens = batch["description_tokens"].to(self.device, non_blocking=True)
        autocast = torch.autocast(self.device.type, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None)
        with torch.inference_mode(), autocast:
            return self.model.encode(images, tokens)

    def _write_entry(self, key: str, features: dict[str, torch.Tensor], image_name: str) -> None:
        from safetensors.torch import save_file

        dtype = STORAGE_DTYPES[self.dtype]
        # clone(): slices of one batch tensor share storage, which safetensors refuses.
        tensors = {name: value.detach().to("cpu", dtype).clone() for name, value in features.items()}
        metadata = {"format": FORMAT_NAME, "version": str(FORMAT_VERSION), "image": image_name}

        def write(tmp: str) -> None:
            save_file(tensors, tmp, metadata=metadata)
            os.chmod(tmp, self._file_mode)  # temporary files are 0600; a shared cache follows the umask

        atomic_write(self.entry_path(key), write)

    def _write_manifest(self) -> None:
        path = self.key_dir / MANIFEST_NAME
        if path.is_file():
            return
        manifest = {
            "what": "MTPG-AIAA encode() features of a frozen Long-CLIP backbone, one .safetensors per "
                    "(image, description); see docs/feature_cache.md",
            "layout": "<2-char prefix>/<entry key>.safetensors; entry key = blake2b of the image path "
                      "relative to the image root, its size, mtime_ns and the description's sha256",
            "key": self.identity,
            "entry_shapes": {name: shape for name, shape in self.feature_shapes.items() if name != PADDING_KEY},
            "backbone_arch": self.model.backbone.arch.to_dict(),
            "created": time.strftime("%Y-%m-%d %H:%M:%S"),
            "mtpg_aiaa_version": __version__,
            "clear": f"rm -r {self.key_dir}",
        }  # fmt: skip

        def write(tmp: str) -> None:
            Path(tmp).write_text(json.dumps(manifest, indent=2) + "\n")
            os.chmod(tmp, self._file_mode)

        atomic_write(path, write)

    # -- reading -------------------------------------------------------------------
    def dataset(self, source: AestheticsDataset, keys: list[str | None] | None = None) -> "CachedFeatureDataset":
        """The rows of ``source`` as cached features (call ``build`` first).

        Rows whose image was skipped (missing or unreadable, ``on_bad_image=skip``) are
        left out, as the uncached path drops them from its batches.
        """
        keys = self.entry_keys(source) if keys is None else keys
        present = {key for key in set(keys) if key is not None and self.entry_path(key).is_file()}
        rows = [row for row, key in enumerate(keys) if key in present]
        absent = [row for row, key in enumerate(keys) if key is not None and key not in present]
        if absent and source.on_bad_image == "error":
            row = absent[0]
            raise FeatureCacheError(f"{len(absent)} feature cache entries are missing, e.g. {source.image_names[row]} "
                                    f"({self.entry_path(keys[row])}); run FeatureCache.build first")  # fmt: skip
        if len(rows) < len(keys):
            log.warning("feature cache: %d of %d rows left out (unreadable images)", len(keys) - len(rows), len(keys))
        return CachedFeatureDataset(self, source, [(row, keys[row]) for row in rows])


def read_entry(path: Path, names: list[str], key_dir: Path) -> dict[str, torch.Tensor]:
    """The tensors ``names`` of the entry file ``path`` in fp32; a missing or damaged file
    raises ``FeatureCacheError`` naming it and the fix."""
    from safetensors.torch import load_file

    fix = (f"delete it (rm {path}) and start again: missing entries are rebuilt; "
           f"or clear this cache with rm -r {key_dir}")  # fmt: skip
    try:
        tensors = load_file(str(path))
    except FileNotFoundError as error:
        raise FeatureCacheError(f"feature cache entry {path} is missing; build the cache first "
                                f"(FeatureCache.build) or clear it with rm -r {key_dir}") from error  # fmt: skip
    except Exception as error:  # safetensors raises its own error type on damaged files
        raise FeatureCacheError(f"feature cache entry {path} is unreadable ({error}); {fix}") from error
    missing = [name for name in names if name not in tensors]
    if missing:
        raise FeatureCacheError(f"feature cache entry {path} lacks {missing}; {fix}")
    return {name: tensors[name].float() for name in names}


def _current_umask() -> int:
    mask = os.umask(0)  # the only way to read it is to set it; restored at once
    os.umask(mask)
    return mask


def sample_features(features: dict[str, torch.Tensor], i: int) -> dict[str, torch.Tensor]:
    """Sample ``i`` of a batch from ``encode``: every feature at row ``i``, with
    ``text_tokens`` ``[L_i, D]`` cut where ``text_padding`` starts (after its EOT)."""
    sample = {name: value[i] for name, value in features.items() if name != PADDING_KEY}
    if PADDING_KEY in features:
        length = int((~features[PADDING_KEY][i]).sum())
        sample[TEXT_TOKENS_KEY] = sample[TEXT_TOKENS_KEY][:length]
    return sample


class CachedFeatureDataset(Dataset):
    """Rows of an ``AestheticsDataset`` served from the cache.

    A sample is ``{"features": {name: fp32 tensor}, "target", "score", "image_name",
    "index"}`` where ``features`` holds ``image [D]`` and, as the fusion needs, ``text
    [D]``, ``image_tokens [N, D]``, ``text_tokens [L_i, D]``; ``index`` is the source row.
    Holds paths and labels only (not the model), so it is cheap to send to workers.
    """

    def __init__(self, cache: FeatureCache, source: AestheticsDataset, rows: list[tuple[int, str]]):
        self.source_rows = [row for row, _ in rows]
        self.paths = [cache.entry_path(key) for _, key in rows]
        self.names, self.key_dir = list(cache.stored_names), cache.key_dir
        self.targets, self.scores, self.image_names = source.targets, source.scores, source.image_names

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict[str, Any]:
        row = self.source_rows[index]
        return {
            "features": read_entry(self.paths[index], self.names, self.key_dir),
            "target": torch.tensor(self.targets[row], dtype=torch.float32),
            "score": self.scores[row], "image_name": self.image_names[row], "index": row,
        }  # fmt: skip


def collate_features(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Batch ``CachedFeatureDataset`` samples: ``features`` as ``encode`` returns them
    (``text_tokens [B, L, D]`` zero-padded to the longest description, ``text_padding
    [B, L]`` True after each EOT), ``target [B]``, ``score`` float64 ``[B]``, ``index [B]``,
    ``image_name`` list, ``skipped`` empty (bad images never reach the cache)."""
    features: dict[str, torch.Tensor] = {}
    for name in samples[0]["features"]:
        values = [sample["features"][name] for sample in samples]
        if name == TEXT_TOKENS_KEY:
            lengths = torch.tensor([value.shape[0] for value in values])
            features[name] = pad_sequence(values, batch_first=True)
            features[PADDING_KEY] = torch.arange(int(lengths.max()))[None, :] >= lengths[:, None]
        else:
            features[name] = torch.stack(values)
    return {
        "features": features,
        "target": torch.stack([sample["target"] for sample in samples]),
        "score": torch.tensor([sample["score"] for sample in samples], dtype=torch.float64),
        "index": torch.tensor([sample["index"] for sample in samples], dtype=torch.long),
        "image_name": [sample["image_name"] for sample in samples],
        "skipped": [],
    }


def predict_features(model: nn.Module, loader: DataLoader, device: torch.device) -> pd.DataFrame:
    """Score cached batches (``collate_features``) through the one prediction loop
    (``eval.predict``), ``model.score_features`` in place of the image forward: one call per
    loader batch. Returns the table of ``predictions.py`` (``index, image, score, target,
    pred, pred_0_1, prob_<level>``) sorted by source row."""
    return predict(model, loader, device, progress=False, forward=lambda inputs: model.score_features(inputs["features"])).table
