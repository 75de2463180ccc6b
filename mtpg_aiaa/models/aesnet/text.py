"""The frozen text side of AesNet: Long-CLIP's 248-token text tower (the descriptions are
paragraphs, past CLIP's 77 tokens) and a cache of description features.

The tower never trains, so each distinct description is encoded once
(``DescriptionFeatureCache``) and training reads features, not tokens. Empty texts (a row
without that attribute) get no feature; the caller masks them.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from ...backbone.convert import load_longclip
from ...backbone.longclip import LongCLIP, create_longclip, encode_text_by_length
from ...fileio import atomic_write
from ...backbone.tokenizer import get_tokenizer


class FrozenTextEncoder(nn.Module):
    """Long-CLIP's text tower, frozen and in eval mode: texts -> ``[N, E]`` features.

    Args:
        backbone: a Long-CLIP config name (random weights; tests) when ``weights`` is None.
        weights: a Long-CLIP weights file (``longclip-L.pt``); its image tower is dropped.
    """

    def __init__(self, backbone: str = "LongCLIP-L-14", weights: str | None = None):
        super().__init__()
        clip: LongCLIP = load_longclip(weights) if weights else create_longclip(backbone)
        del clip.visual  # only the text tower is used; its image tower would just hold memory
        self.clip = clip.eval().requires_grad_(False)
        self.tokenizer = get_tokenizer(clip.context_length)
        self.embed_dim = int(clip.embed_dim)

    def train(self, mode: bool = True) -> "FrozenTextEncoder":
        return super().train(False)  # frozen: dropout and the like stay off whatever the parent does

    @torch.no_grad()
    def encode(self, texts: Sequence[str], batch_size: int = 64) -> torch.Tensor:
        """``N`` texts -> ``[N, E]`` unnormalised features (no gradient)."""
        device = self.clip.token_embedding.weight.device
        parts = []
        for start in range(0, len(texts), batch_size):
            tokens = self.tokenizer(list(texts[start:start + batch_size])).to(device)
            parts.append(encode_text_by_length(self.clip, tokens).float())
        return torch.cat(parts) if parts else torch.empty(0, self.embed_dim, device=device)

    def fingerprint(self) -> str:
        """A digest of the tower's weights: a cache written by other weights is refused."""
        digest = hashlib.sha256()
        for name, tensor in sorted(self.clip.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
        return digest.hexdigest()[:16]


def text_key(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


class DescriptionFeatureCache:
    """Features of distinct texts, computed once by a frozen ``FrozenTextEncoder``.

    ``features(texts)`` returns ``[N, E]`` (zeros for empty texts) and ``present [N]``;
    texts not yet cached are encoded in one pass. ``save`` / ``load`` keep the cache in a
    safetensors file tied to the encoder's ``fingerprint``.
    """

    def __init__(self, encoder: FrozenTextEncoder):
        self.encoder = encoder
        self.embed_dim = encoder.embed_dim
        self._rows: dict[str, int] = {}
        self._table = torch.empty(0, self.embed_dim)

    def __len__(self) -> int:
        return len(self._rows)

    def add(self, texts: Sequence[str]) -> int:
        """Encode the distinct non-empty texts not cached yet; returns how many were new."""
        new = list(dict.fromkeys(t for t in texts if t and t.strip() and text_key(t) not in self._rows))
        if new:
            features = self.encoder.encode(new).cpu()
            for offset, text in enumerate(new):
                self._rows[text_key(text)] = len(self._table) + offset
            self._table = torch.cat([self._table, features])
        return len(new)

    def features(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """``N`` texts -> features ``[N, E]`` (zero rows for empty texts), ``present [N]`` bool."""
        self.add(texts)
        present = torch.tensor([bool(t and t.strip()) for t in texts], dtype=torch.bool)
        rows = torch.tensor([self._rows[text_key(t)] if p else 0 for t, p in zip(texts, present.tolist())],
                            dtype=torch.long)  # fmt: skip
        out = self._table[rows] if len(self._table) else torch.zeros(len(texts), self.embed_dim)
        return out * present[:, None].to(out.dtype), present

    def save(self, path: str | Path) -> Path:
        from safetensors.torch import save_file

        keys = sorted(self._rows, key=self._rows.get)
        metadata = {"fingerprint": self.encoder.fingerprint(), "keys": json.dumps(keys)}
        table = self._table.contiguous()
        return atomic_write(path, lambda temporary: save_file({"features": table}, temporary, metadata=metadata))

    def load(self, path: str | Path) -> None:
        """Read a saved cache; refuses one written by a different text tower."""
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            if metadata.get("fingerprint") != self.encoder.fingerprint():
                raise ValueError(f"{path}: description features of another text encoder; delete it to rebuild")
            table = handle.get_tensor("features")
        keys = json.loads(metadata["keys"])
        if len(keys) != len(table):
            raise ValueError(f"{path}: {len(keys)} keys for {len(table)} feature rows")
        self._rows, self._table = {k: i for i, k in enumerate(keys)}, table
