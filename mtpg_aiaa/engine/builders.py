"""Models for training, from a config group or from earlier weights (``init_from``)."""
from __future__ import annotations

import logging
from pathlib import Path

import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from ..backbone.convert import CheckpointError, is_training_state, load_weights_only
from ..backbone.torchscript import is_torchscript_archive
from ..backbone.transfer import MODEL_PREFIX as AESNET_ENCODER_PREFIX, is_aesnet_encoder_file
from ..data.errors import BadInputError
from ..data.provenance import decode_record
from ..errors import SettingError
from ..fileio import file_kind
from ..models.base import FORMAT_NAME, TRAINING_DATA_KEY, read_metadata
from ..models.loading import TRAINING_KEYS, load_model
from ..models.mtpg.factory import mtpg_config
from ..models.mtpg.model import MTPGConfig
from .checkpointing import load_training_state
from .freezing import apply_freeze_policy

log = logging.getLogger(__name__)
DEFAULT_MODEL_TARGET = "mtpg_aiaa.models.mtpg.build_mtpg_model"  # model groups written before _target_


def _model_kwargs(cfg: DictConfig) -> dict:
    """The ``model`` group as keyword arguments of its ``_target_`` (training-only keys dropped)."""
    values = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    return {k: v for k, v in values.items() if k not in TRAINING_KEYS}


def model_config_from(cfg: DictConfig) -> MTPGConfig:
    """The ``MTPGConfig`` an MTPG ``model`` group describes (for tests and tools that need the config only)."""
    kwargs = {k: v for k, v in _model_kwargs(cfg).items() if not k.startswith("_") and k != "backbone_weights"}
    return mtpg_config(**kwargs)


def build_training_model(cfg: DictConfig, init_from: str | None = None) -> nn.Module:
    """The model the ``model`` config group's ``_target_`` builds (its backbone from
    ``backbone_weights`` unless ``init_from`` is given), then ``init_from`` weights loaded
    where names and shapes match (so a stage-1 backbone starts a stage-2 model with a
    new fusion head), then the freezing policy applied."""
    kwargs = _model_kwargs(cfg)
    kwargs.setdefault("_target_", DEFAULT_MODEL_TARGET)
    kwargs["_convert_"] = "all"  # plain dicts and lists reach the build function, not DictConfigs
    if init_from and "backbone_weights" in kwargs and not is_aesnet_encoder_file(init_source(init_from)):
        kwargs["backbone_weights"] = None  # an AesNet encoder replaces the image tower only: the text tower stays
    model = instantiate_reraising_input_errors(kwargs)
    if init_from:
        load_matching_weights(model, init_from)
    if "freeze" in cfg and hasattr(model, "backbone"):
        apply_freeze_policy(model.backbone, cfg.freeze, cfg.get("freeze_last_n", 0))
    return model


def instantiate_reraising_input_errors(config):
    """``hydra.utils.instantiate(config)``, but a weights or settings problem raised inside the
    target (a bad ``model.backbone_weights`` file, say) comes out as itself, not wrapped in
    Hydra's ``InstantiationException``, so the command line reports it in one line."""
    try:
        return instantiate(config)
    except InstantiationException as error:
        if isinstance(error.__cause__, (CheckpointError, SettingError, BadInputError)):
            raise error.__cause__ from None
        raise


def init_source(source: str | Path) -> Path:
    """The file ``init_from`` means: a run dir's ``best.safetensors`` (else ``last.pt``), or itself."""
    source = Path(source)
    if source.is_dir():
        candidates = [source / "best.safetensors", source / "last.pt"]
        found = next((c for c in candidates if c.is_file()), None)
        if found is None:
            raise CheckpointError(f"init_from={source}: no best.safetensors or last.pt inside")
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
    if start_image_tower_from_aesnet(model, source):
        return
    incoming = read_init_state(source)
    own = model.state_dict()
    matched = {k: v for k, v in incoming.items() if k in own and own[k].shape == v.shape}
    # The whole backbone or nothing: a few tensors that fit by chance (the unused scalar
    # backbone.logit_scale fits every architecture) must not pass for a loaded backbone.
    backbone = [k for k in own if k.startswith("backbone.")]
    unmatched = [k for k in backbone if k not in matched]
    if unmatched:
        raise CheckpointError(
            f"init_from={source}: the backbone does not match this model's architecture "
            f"({len(backbone) - len(unmatched)} of {len(backbone)} backbone tensors fit; not {unmatched[0]})"
        )
    model.load_state_dict(matched, strict=False)
    skipped = sorted(set(own) - set(matched))
    log.info("init_from %s: loaded %d tensors; %d left at initialisation (%s%s)", source, len(matched),
             len(skipped), ", ".join(skipped[:5]), "..." if len(skipped) > 5 else "")  # fmt: skip


def start_image_tower_from_aesnet(model: nn.Module, source: str | Path) -> bool:
    """``init_from`` an AesNet encoder into another system's model: its image tower, all or
    nothing (``backbone/transfer.py``; one line naming both architectures when they differ).
    False when ``source`` is not an AesNet encoder or ``model`` is AesNet's own (names match)."""
    source = init_source(source)
    if not is_aesnet_encoder_file(source) or any(k.startswith(AESNET_ENCODER_PREFIX) for k in model.state_dict()):
        return False
    model.load_image_tower(source)
    log.info("init_from %s: image tower from the AesNet encoder; the rest of the model as built", source)
    return True
