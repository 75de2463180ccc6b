"""Models for training, from a config group or from earlier weights (``init_from``)."""
from __future__ import annotations

import logging
from pathlib import Path

from hydra.errors import InstantiationException
from hydra.utils import get_method, instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from ..backbone.convert import CheckpointError
from ..backbone.transfer import is_aesnet_encoder_file
from ..data.errors import BadInputError
from ..data.provenance import decode_record
from ..errors import SettingError
from ..fileio import file_kind
from ..models.base import FORMAT_NAME, TRAINING_DATA_KEY, read_metadata
from ..models.checkpoints import init_source, load_matching_weights, read_init_state, read_training_record  # noqa: F401
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
    # An AesNet encoder file replaces the image tower only: the rest of the model keeps its
    # configured external weights (MTPG's text tower, CG-IAA's CLIP text tower).
    if init_from and not is_aesnet_encoder_file(init_source(init_from)):
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
