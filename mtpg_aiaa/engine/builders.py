"""Models for training, from a config group or from earlier weights (``init_from``)."""
from __future__ import annotations

import logging
from pathlib import Path

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from ..backbone.convert import CheckpointError
from ..data.errors import BadInputError
from ..data.provenance import decode_record
from ..errors import SettingError
from ..fileio import file_kind
from ..models.base import FORMAT_NAME, TRAINING_DATA_KEY, read_metadata
from ..models.checkpoints import init_source, load_matching_weights, read_init_state, read_training_record  # noqa: F401
from ..models.loading import TRAINING_KEYS
from ..models.mtpg.factory import mtpg_config
from ..models.mtpg.model import MTPGConfig
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
    if init_from and "backbone_weights" in kwargs:
        kwargs["backbone_weights"] = None
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


# init_source, read_init_state and load_matching_weights live in models/checkpoints.py (the
# one checkpoint module); imported above so callers of this module keep working.


def read_init_record(source: str | Path) -> list[dict] | None:
    """What the ``init_from`` weights were trained on (``data/provenance.py``); None when the
    file does not say (the authors' release, files written before the record existed)."""
    source = init_source(source)
    if file_kind(source) == "safetensors":
        metadata = read_metadata(source)
        return decode_record(metadata.get(TRAINING_DATA_KEY), str(source)) if metadata.get("format") == FORMAT_NAME else None
    record = read_training_record(source) if file_kind(source) == "torch" else None
    return (record or {}).get(TRAINING_DATA_KEY) or None
