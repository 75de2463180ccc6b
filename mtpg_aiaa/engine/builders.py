"""Models for training, from a config group or from earlier weights (``init_from``)."""
from __future__ import annotations

import logging
from pathlib import Path

import torch
from hydra.errors import InstantiationException
from hydra.utils import get_method, instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from ..backbone.convert import CheckpointError, is_training_state, load_weights_only
from ..backbone.torchscript import is_torchscript_archive
from ..data.errors import BadInputError
from ..data.provenance import decode_record
from ..errors import SettingError
from ..fileio import file_kind
from ..models.base import FORMAT_NAME, TRAINING_DATA_KEY, read_metadata
from ..models.loading import load_model
from .checkpointing import load_training_state
from .freezing import FREEZE_KEYS, freeze_model

log = logging.getLogger(__name__)


def _model_kwargs(cfg: DictConfig) -> dict:
    """The ``model`` group as keyword arguments of its ``_target_`` (the freezing keys dropped:
    they reach the model only through ``freezing.freeze_model``)."""
    values = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    return {k: v for k, v in values.items() if k not in FREEZE_KEYS}


def external_weight_keys(kwargs: dict) -> list[str]:
    """The ``*_weights`` keys (external pretrained files) that ``init_from`` replaces: all of
    them but those the build function declares as loading parts kept beside the model, which
    no run's weights hold (``weights_beside_model``, e.g. AesNet pretraining's frozen text tower)."""
    build = get_method(kwargs["_target_"])
    beside = set(getattr(build, "weights_beside_model", ()))
    return [k for k in kwargs if k.endswith("_weights") and k not in beside]


def build_training_model(cfg: DictConfig, init_from: str | None = None) -> nn.Module:
    """The one way ``train.py`` builds a model, for every system.

    ``cfg`` is the ``model`` group (``configs/model/<system>/``): its ``_target_`` is called
    with every key but ``freeze``/``freeze_last_n``. Starting weights are said two ways:
    external pretrained files are the group's ``*_weights`` keys (``backbone_weights``,
    ``clip_weights``, ``encoder_weights``, ``gpt2_weights``, ``text_weights``); an earlier run of
    this project is ``init_from`` (a run dir, ``best.safetensors``, ``best.pt``, ``last.pt``, or
    MTPG-AIAA's ``model_save.pt``). With ``init_from`` the external files it replaces are not
    read, and its tensors are loaded where names and shapes match (so a stage-1 backbone starts
    a stage-2 model with a new fusion head, an AesNet pretraining encoder a scorer, a VLAP CLIP a
    MAP scorer). Then ``freeze`` is applied (``freezing.freeze_model``)."""
    kwargs = _model_kwargs(cfg)
    if "_target_" not in kwargs:
        raise SettingError("the model group has no _target_: pick one of configs/model/<system>/ (model=mtpg/tiny, ...)")
    kwargs["_convert_"] = "all"  # plain dicts and lists reach the build function, not DictConfigs
    if init_from:
        for key in external_weight_keys(kwargs):
            kwargs[key] = None
    model = instantiate_reraising_input_errors(kwargs)
    if init_from:
        load_matching_weights(model, init_from)
    if cfg.get("freeze") is not None:
        freeze_model(model, cfg.get("freeze"), cfg.get("freeze_last_n", 0))
    return model


def instantiate_reraising_input_errors(config, **kwargs):
    """``hydra.utils.instantiate(config, **kwargs)``, but a weights or settings problem raised
    inside the target (a bad ``model.backbone_weights`` file, say) comes out as itself, not
    wrapped in Hydra's ``InstantiationException``, so the command line reports it in one line."""
    try:
        return instantiate(config, **kwargs)
    except InstantiationException as error:
        if isinstance(error.__cause__, (CheckpointError, SettingError, BadInputError)):
            raise error.__cause__ from None
        raise


def init_source(source: str | Path) -> Path:
    """The file ``init_from`` means: a run dir's ``best.safetensors`` (else its ``best.pt``, the
    validated state of a model that writes no ``.safetensors``, such as AesNet pretraining; else
    ``last.pt``), or itself."""
    source = Path(source)
    if source.is_dir():
        candidates = [source / "best.safetensors", source / "best.pt", source / "last.pt"]
        found = next((c for c in candidates if c.is_file()), None)
        if found is None:
            raise CheckpointError(f"init_from={source}: no best.safetensors, best.pt or last.pt inside")
        source = found
    if not source.is_file():
        raise CheckpointError(f"init_from={source} not found")
    return source


def read_init_record(source: str | Path) -> list[dict] | None:
    """What the ``init_from`` weights were trained on (``data/provenance.py``); None when the
    file does not say (the authors' release, files written before the record existed)."""
    source = init_source(source)
    if file_kind(source) == "safetensors":
        metadata = read_metadata(source)
        return decode_record(metadata.get(TRAINING_DATA_KEY), str(source)) if metadata.get("format") == FORMAT_NAME else None
    if file_kind(source) == "torch" and not is_torchscript_archive(source):
        try:  # memory-mapped: the tensors (1.7 GB for the released model) are not read for this
            state = torch.load(str(source), map_location="cpu", weights_only=True, mmap=True)
        except Exception:  # noqa: BLE001 - a legacy (non-zip) file cannot be mapped; read it whole
            state = load_weights_only(source)
        if is_training_state(state):
            return state.get(TRAINING_DATA_KEY) or None
    return None


def read_init_state(source: str | Path) -> dict[str, torch.Tensor]:
    """Model weights from a run dir (its ``best.safetensors``, else ``last.pt``), a training
    ``.pt``, one of our ``.safetensors`` or the authors' ``model_save.pt``."""
    source = init_source(source)
    if file_kind(source) == "torch" and not is_torchscript_archive(source) and is_training_state(load_weights_only(source)):
        return load_training_state(source)["model"]
    return load_model(source).state_dict()  # any system's weights file, told by its content


def load_matching_weights(model: nn.Module, source: str | Path) -> None:
    """Copy every tensor of ``source`` whose name and shape match ``model``; log the rest."""
    incoming = read_init_state(source)
    own = model.state_dict()
    matched = {k: v for k, v in incoming.items() if k in own and own[k].shape == v.shape}
    if not matched:
        raise CheckpointError(f"init_from={source}: no tensor matches {type(model).__name__}'s names and shapes")
    # The whole backbone or nothing: a few tensors that fit by chance (the unused scalar
    # backbone.logit_scale fits every architecture) must not pass for a loaded backbone. A model
    # names other parts that must load whole in ``init_from_whole`` (AesNet's frozen reference encoder).
    for prefix in getattr(model, "init_from_whole", ("backbone.",)):
        part = [k for k in own if k.startswith(prefix)]
        unmatched = [k for k in part if k not in matched]
        if unmatched:
            raise CheckpointError(
                f"init_from={source}: the {prefix.rstrip('.')} does not match this model's architecture "
                f"({len(part) - len(unmatched)} of {len(part)} {prefix.rstrip('.')} tensors fit; not {unmatched[0]})"
            )
    model.load_state_dict(matched, strict=False)
    skipped = sorted(set(own) - set(matched))
    log.info("init_from %s: loaded %d tensors; %d left at initialisation (%s%s)", source, len(matched),
             len(skipped), ", ".join(skipped[:5]), "..." if len(skipped) > 5 else "")  # fmt: skip
