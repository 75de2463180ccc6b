"""The interface every aesthetics system implements, so that ``test.py``, the scoring CLI
and the training engine treat MTPG-AIAA, CG-IAA and AesNet alike.

A *batch* is a dict built by the data pipeline:

- ``image``: ``[B, 3, H, W]`` float, made by ``scorer.build_transform()``;
- ``tokens``: ``{text name: [B, L] int64}`` made by ``scorer.tokenize`` from the row's named
  texts (``description`` for MTPG, ``color``/``composition``/``dof``/``general`` for CG-IAA);
  absent when the system reads no text.

``forward(batch)`` (the one forward of every scorer) returns at least ``score [B]`` on ``score_range``; a system that predicts a
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
MODEL_KIND_KEY = "model"  # what a non-scorer file holds (SavedModel.model_kind); absent: a scorer


@dataclass(frozen=True)
class ScoreRange:
    """Where a system's scores lie: ``low``..``high``, whether higher is better, and whether
    the head holds its scores inside (``bounded``). An unbounded head (CG-IAA's released linear
    head) was trained towards ``low``..``high`` but can leave it: the range is then the data's
    scale, not a promise."""

    low: float = 0.0
    high: float = 1.0
    higher_is_better: bool = True
    bounded: bool = True

    def describe(self) -> str:
        """``0-1, higher is better`` (``unbounded, trained on 0-1`` for an unbounded head)."""
        span = f"{self.low:g}-{self.high:g}"
        return (span if self.bounded else f"unbounded, trained on {span}") + \
            f", {'higher' if self.higher_is_better else 'lower'} is better"

    def to_json(self) -> str:
        # ``bounded`` is written only when false, so files of bounded systems keep the bytes they had.
        fields = asdict(self)
        if self.bounded:
            del fields["bounded"]
        return json.dumps(fields)

    @classmethod
    def from_json(cls, text: str) -> "ScoreRange":
        return cls(**json.loads(text))

    def rescale(self, scores: torch.Tensor, low: float, high: float) -> torch.Tensor:
        """``scores`` mapped linearly from this range onto ``[low, high]``."""
        return low + (scores - self.low) * (high - low) / (self.high - self.low)


class SavedModel(nn.Module):
    """A model this package saves and loads in its own format: one ``.safetensors`` file of
    its tensors with ``{"format", "system", "model", "config"}`` in the metadata.

    Subclasses set ``system`` (the registry name) and ``model_kind`` (``scorer``, ``expert``,
    ``pretrain``: what the model is, said in every file and training checkpoint) and
    implement ``config_dict`` and ``from_config``; saving and strict loading are written once,
    in ``models/checkpoints.py``. A weights file names data only: ``from_config`` builds from
    the registry's architecture names and numbers, never from a path, hub or class it reads.
    """

    system: ClassVar[str] = ""
    model_kind: ClassVar[str] = "scorer"
    # The parts (tensor-name prefixes) that load whole or not at all when ``init_from`` copies
    # matching weights (a few that fit by chance must not pass for a loaded backbone); a model
    # may set its own per instance (AesNet pretraining adds its frozen reference encoder).
    init_from_whole: tuple[str, ...] = ("backbone.",)
    # The dataclass a config read from a file is checked against, field by field
    # (``checkpoints.check_config``); None: ``from_config`` checks its own (nested) config.
    config_type: ClassVar[type | None] = None
    # State-dict keys that share their tensor with another key and are not written to files.
    tied_keys: ClassVar[tuple[str, ...]] = ()
    # What the weights are, for reports (``test.py``'s metrics.json); set by the loaders.
    weights_kind: str = "a freshly built model (not loaded from a file)"
    # What the weights were trained on (data/provenance.py): set by train.py and by the
    # loaders from the file's record; None for files without one (the authors' release).
    training_data: list[dict[str, Any]] | None = None

    _classes: ClassVar[dict[tuple[str, str], type]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.system and ("system" in cls.__dict__ or "model_kind" in cls.__dict__):
            # the class a file's (system, model) names: one per pair, as the registry holds one system per name
            known = SavedModel._classes.get((cls.system, cls.model_kind))
            if known is not None and known.__qualname__ != cls.__qualname__:
                raise ValueError(f"{cls.system} {cls.model_kind} is defined twice ({known.__qualname__}, {cls.__qualname__})")
            SavedModel._classes[cls.system, cls.model_kind] = cls

    def config_dict(self) -> dict[str, Any]:
        """JSON-able numbers and names that ``from_config`` rebuilds this model from (weights aside)."""
        raise NotImplementedError(f"{type(self).__name__} does not say its config")

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "SavedModel":
        """A fresh model of ``config`` (``config_dict``'s output), randomly initialised; the
        caller has checked ``config`` (``checkpoints.check_config``)."""
        raise NotImplementedError(f"{cls.__name__} cannot be rebuilt from a config")

    @classmethod
    def config_from_run_config(cls, run_config: dict[str, Any], source: str | Path) -> dict[str, Any] | None:
        """For ``last.pt`` files written before training checkpoints recorded their model:
        the ``from_config`` config that the run config (read as data) describes, when it is
        this class's; None otherwise (the default: such files are not recognised)."""
        return None

    def metadata(self) -> dict[str, str]:
        """What a saved file needs besides the tensors: at least ``{"config": json}``."""
        return {"config": json.dumps(self.config_dict())}

    def load_image_tower(self, source: str | Path) -> None:
        """Start this model's image tower from an AesNet encoder file (``backbone/transfer.py``),
        all or nothing. Systems without an open_clip image tower refuse."""
        from ..backbone.convert import CheckpointError

        raise CheckpointError(f"{source} is an AesNet image encoder; {self.system or type(self).__name__} has no "
                              "open_clip image tower to start from it")  # fmt: skip

    def save(self, path: str | Path) -> Path:
        """Write weights and metadata to one ``.safetensors`` file, atomically;
        ``models.loading.load_model`` rebuilds the model from that file alone."""
        from .checkpoints import save_model_file  # checkpoints.py imports this module

        return save_model_file(self, path)


class Scorer(SavedModel):
    """Base class of a system's scoring model (see the module docstring for the batch).

    Subclasses set ``system`` (the registry name), ``score_range`` and ``text_names`` and
    implement ``build_transform``, ``forward``, ``image_size``, ``config_dict`` and
    ``from_config``; text-reading systems also implement ``tokenize``. Everything generic
    code (``test.py``, the API, the CLI, the predictions table) reads is declared here.
    """

    score_range: ScoreRange = ScoreRange()
    text_names: tuple[str, ...] = ()  # the named texts a row must carry, in order
    distribution_values: Sequence[float] | None = None  # the K values a ``distribution`` is over
    distribution_labels: Sequence[str] | None = None  # names of the K values (prediction columns prob_<label>)
    outputs_depend_on_batch: bool = False  # True: a sample's score depends on its batch-mates
    score_is_expected_value: bool = False  # True: score == distribution @ distribution_values
    preprocess: str | None = None  # the name of the preprocessing ``build_transform`` applies, when it has one
    prompt_set: str | None = None  # the name of the level prompts scored against, for systems that use them

    @property
    def image_size(self) -> int:
        """The side of the square images ``build_transform`` makes."""
        raise NotImplementedError(f"{type(self).__name__} does not say its image size")

    def build_transform(self, train: bool = False, preprocess: str | None = None) -> Callable[[Any], torch.Tensor]:
        """PIL image -> ``[3, H, W]`` tensor: the system's own preprocessing (eval unless
        ``train``); ``preprocess`` names another of the system's pipelines, where it has several."""
        raise NotImplementedError

    def tokenize(self, texts: dict[str, Sequence[str]]) -> dict[str, torch.Tensor]:
        """``{name: B strings}`` -> ``{name: [B, L] token ids}`` for the names in ``text_names``."""
        if self.text_names:
            raise NotImplementedError(f"{type(self).__name__} reads {self.text_names} but has no tokenize()")
        return {}

    def count_truncated(self, texts: Sequence[str]) -> int:
        """How many of ``texts`` ``tokenize`` cuts short (0 for systems that read no free text)."""
        return 0

    def set_prompts(self, prompt_set: str) -> None:
        """Score against another set of level prompts; systems without prompts refuse."""
        from ..errors import SettingError

        raise SettingError(f"the {self.system} system scores without level prompts; prompts={prompt_set!r} does not apply")

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:  # pragma: no cover - interface
        raise NotImplementedError


    def describe_outputs(self, outputs: dict[str, torch.Tensor]) -> list[dict[str, dict[str, float]]]:
        """Per sample, the named numbers behind its score, for reports (``mtpg_aiaa.explain``):
        ``[{group title: {label: value}}]``. The default shows a predicted ``distribution``
        over ``distribution_values`` (or ``distribution_labels`` where a system names them)."""
        if "distribution" not in outputs:
            return [{} for _ in range(len(outputs["score"]))]
        rows = outputs["distribution"].float().cpu().tolist()
        labels = self.distribution_labels or [f"{v:g}" for v in self.distribution_values or ()]
        labels = list(labels) if len(labels) == len(rows[0]) else [str(k) for k in range(len(rows[0]))]
        return [{"predicted distribution": dict(zip(labels, row))} for row in rows]


def scorer_metadata(model: SavedModel) -> dict[str, str]:
    """The safetensors metadata of a saved model: format, system, what the model is (not
    written for scorers, as in files from before other kinds were saved), score range (for
    scorers), what it was trained on (when known) and its own."""
    recorded = {TRAINING_DATA_KEY: json.dumps(model.training_data)} if model.training_data else {}
    kind = {"score_range": model.score_range.to_json()} if isinstance(model, Scorer) else {MODEL_KIND_KEY: model.model_kind}
    return {**model.metadata(), "format": FORMAT_NAME, "system": model.system, **kind, **recorded}


def read_metadata(path: str | Path) -> dict[str, str]:
    """The metadata of a ``.safetensors`` file (empty if it has none); reads the header only,
    checked (``backbone.weights_file.read_safetensors_header``: a corrupt file is a one-line
    ``CheckpointError``)."""
    from ..backbone.weights_file import read_safetensors_header

    return read_safetensors_header(path)[0]
