"""The interface every aesthetics system implements, so that ``test.py``, the scoring CLI
and the training engine treat MTPG-AIAA, CG-IAA and AesNet alike.

A *batch* is a dict built by the data pipeline:

- ``image``: ``[B, 3, H, W]`` float, made by ``scorer.build_transform()``;
- ``tokens``: ``{text name: [B, L] int64}`` made by ``scorer.tokenize`` from the row's named
  texts (``description`` for MTPG, ``color``/``composition``/``dof``/``general`` for CG-IAA);
  absent when the system reads no text.

``forward(batch)`` returns at least ``score [B]`` on ``score_range``; a system that predicts a
distribution adds ``distribution [B, K]`` (rows sum to 1) over ``distribution_values``.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

FORMAT_NAME = "mtpg-aiaa"  # the safetensors metadata "format" of every file this package writes
TRAINING_DATA_KEY = "training_data"  # what the weights were trained on (data/provenance.py), JSON


@dataclass(frozen=True)
class ScoreRange:
    """Where a system's scores lie: ``low``..``high``, and whether higher is better."""

    low: float = 0.0
    high: float = 1.0
    higher_is_better: bool = True

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "ScoreRange":
        return cls(**json.loads(text))

    def rescale(self, scores: torch.Tensor, low: float, high: float) -> torch.Tensor:
        """``scores`` mapped linearly from this range onto ``[low, high]``."""
        return low + (scores - self.low) * (high - low) / (self.high - self.low)


class Scorer(nn.Module):
    """Base class of a system's scoring model (see the module docstring for the batch).

    Subclasses set ``system`` (the registry name), ``score_range`` and ``text_names`` and
    implement ``build_transform``, ``forward`` and ``metadata``; text-reading systems also
    implement ``tokenize``.
    """

    system: ClassVar[str] = ""
    score_range: ScoreRange = ScoreRange()
    text_names: tuple[str, ...] = ()  # the named texts a row must carry, in order
    distribution_values: Sequence[float] | None = None  # the K values a ``distribution`` is over
    outputs_depend_on_batch: bool = False  # True: a sample's score depends on its batch-mates
    score_is_expected_value: bool = False  # True: score == distribution @ distribution_values
    # What the weights were trained on (data/provenance.py): set by train.py and by the
    # loaders from the file's record; None for files without one (the authors' release).
    training_data: list[dict[str, Any]] | None = None

    def build_transform(self, train: bool = False) -> Callable[[Any], torch.Tensor]:
        """PIL image -> ``[3, H, W]`` tensor: the system's own preprocessing (eval unless ``train``)."""
        raise NotImplementedError

    def tokenize(self, texts: dict[str, Sequence[str]]) -> dict[str, torch.Tensor]:
        """``{name: B strings}`` -> ``{name: [B, L] token ids}`` for the names in ``text_names``."""
        if self.text_names:
            raise NotImplementedError(f"{type(self).__name__} reads {self.text_names} but has no tokenize()")
        return {}

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:  # pragma: no cover - interface
        raise NotImplementedError

    def metadata(self) -> dict[str, str]:
        """What a saved file needs besides the tensors to rebuild this model: at least
        ``{"config": json}``; ``save_scorer`` adds the format, system and score range."""
        raise NotImplementedError

    def describe_outputs(self, outputs: dict[str, torch.Tensor]) -> list[dict[str, dict[str, float]]]:
        """Per sample, the named numbers behind its score, for reports (``mtpg_aiaa.explain``):
        ``[{group title: {label: value}}]``. The default shows a predicted ``distribution``
        over ``distribution_values`` (or ``distribution_labels`` where a system names them)."""
        if "distribution" not in outputs:
            return [{} for _ in range(len(outputs["score"]))]
        rows = outputs["distribution"].float().cpu().tolist()
        labels = getattr(self, "distribution_labels", None) or [f"{v:g}" for v in self.distribution_values or ()]
        labels = list(labels) if len(labels) == len(rows[0]) else [str(k) for k in range(len(rows[0]))]
        return [{"predicted distribution": dict(zip(labels, row))} for row in rows]

    def load_image_tower(self, source: str | Path) -> None:
        """Start this model's image tower from an AesNet encoder file (``backbone/transfer.py``),
        all or nothing. Systems without an open_clip image tower refuse."""
        from ..backbone.convert import CheckpointError

        raise CheckpointError(f"{source} is an AesNet image encoder; {self.system or type(self).__name__} has no "
                              "open_clip image tower to start from it")  # fmt: skip

    def save(self, path: str | Path) -> Path:
        """Write weights and ``scorer_metadata`` to one ``.safetensors`` file, atomically;
        ``models.loading.load_model`` rebuilds the model from that file alone."""
        from .loading import save_scorer  # loading.py imports this module

        return save_scorer(self, path)


def scorer_metadata(scorer: Scorer) -> dict[str, str]:
    """The safetensors metadata of a saved scorer: format, system, score range, what it was
    trained on (when known) and its own."""
    recorded = {TRAINING_DATA_KEY: json.dumps(scorer.training_data)} if scorer.training_data else {}
    return {**scorer.metadata(), "format": FORMAT_NAME, "system": scorer.system,
            "score_range": scorer.score_range.to_json(), **recorded}  # fmt: skip


def read_metadata(path: str | Path) -> dict[str, str]:
    """The metadata of a ``.safetensors`` file (empty if it has none); reads the header only."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        return dict(handle.metadata() or {})
