"""Image encoders for AesNet: any timm model (ResNet-50, Swin, ViT, timm's tiny ``test_*``
models) or an open_clip visual tower, weights from local files only.

An encoder maps ``[B, 3, H, W]`` to pooled features ``[B, C]`` (``num_features``). Its
weights are saved in the backbone's own format (``save_backbone``): a timm state dict, or
an open_clip ``visual.*`` state dict, as safetensors, so timm / open_clip load them
without this package (``timm.create_model(name, pretrained=True,
pretrained_cfg_overlay={"file": path})``; ``model.load_state_dict(..., strict=False)``
for open_clip).
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from torch import nn

from ...backbone.convert import CheckpointError, read_state_dict
from ...fileio import atomic_write

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ImageEncoder(nn.Module):
    """A backbone returning pooled features ``[B, num_features]``.

    Args:
        name: ``timm:<model>`` (or a bare timm name) or ``open_clip:<model>``.
        image_size: input side; passed to timm models that take ``img_size`` (ViT, Swin).
        weights: a local weights file in the backbone's own layout (timm state dict, or an
            open_clip CLIP / visual state dict); None keeps the random initialisation.
    """

    def __init__(self, name: str, image_size: int | None = None, weights: str | None = None):
        super().__init__()
        self.name = name
        self.library, self.model_name = split_encoder_name(name)
        if self.library == "timm":
            self.model, self.num_features, mean, std, size = _create_timm(self.model_name, image_size)
        else:
            self.model, self.num_features, mean, std, size = _create_open_clip_visual(self.model_name, image_size)
        self.image_size, self.mean, self.std = size, tuple(mean), tuple(std)
        if weights:
            load_backbone_weights(self, weights)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``[B, 3, H, W] -> [B, num_features]``."""
        features = self.model(images)
        if isinstance(features, tuple):  # open_clip towers may return (pooled, tokens)
            features = features[0]
        return features

    def backbone_state_dict(self) -> dict[str, torch.Tensor]:
        """The weights in the backbone's own key layout (timm's, or open_clip's ``visual.*``)."""
        state = {k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}
        return state if self.library == "timm" else {f"visual.{k}": v for k, v in state.items()}


def split_encoder_name(name: str) -> tuple[str, str]:
    """``timm:resnet50`` -> ``("timm", "resnet50")``; a bare name is a timm name."""
    library, _, model = name.partition(":") if ":" in name else ("timm", "", name)
    if library not in ("timm", "open_clip") or not model:
        raise ValueError(f"image encoder {name!r}: use timm:<model> or open_clip:<model>")
    return library, model


def check_encoder_name(name: str) -> None:
    """An encoder named in a weights file must be a plain architecture name of timm or
    open_clip: ``timm:hf-hub:...``, ``open_clip:hf-hub:...``, ``local-dir:...`` or a path
    would make building the model download or read another place, so they are refused."""
    library, model = split_encoder_name(name) if isinstance(name, str) else ("", "")
    if not model or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.\-]*", model) or ".." in model:
        raise ValueError(f"encoder {name!r:.80} is not a plain timm / open_clip architecture name; a weights file "
                         "may not name a hub, a folder or a path")  # fmt: skip


def _create_timm(model_name: str, image_size: int | None):
    import timm

    kwargs = {}
    if image_size and any(part in model_name for part in ("vit", "swin", "deit", "eva")):
        kwargs["img_size"] = image_size
    model = timm.create_model(model_name, pretrained=False, num_classes=0, **kwargs)
    config = model.pretrained_cfg or {}
    size = image_size or int(config.get("input_size", (3, 224, 224))[-1])
    return model, int(model.num_features), config.get("mean", IMAGENET_MEAN), config.get("std", IMAGENET_STD), size


def _create_open_clip_visual(model_name: str, image_size: int | None):
    import open_clip

    from ...backbone.longclip import create_longclip, list_models as longclip_models

    if model_name in longclip_models():  # Long-CLIP's image tower (and its tiny test configs)
        clip = create_longclip(model_name)
    else:
        clip = open_clip.create_model(model_name, pretrained=None)
    visual = clip.visual
    size = visual.image_size[0] if isinstance(visual.image_size, tuple) else visual.image_size
    if image_size and image_size != size:
        raise ValueError(f"open_clip:{model_name} reads {size}px images; image_size={image_size} differs")
    return visual, int(visual.output_dim), OPENAI_MEAN, OPENAI_STD, int(size)


def load_backbone_weights(encoder: ImageEncoder, path: str | Path) -> None:
    """Load a local weights file into ``encoder``, strictly.

    timm: a timm state dict (a ``head``/``fc``/``classifier`` trained for ImageNet is
    dropped, since the encoder has no classifier). open_clip: a full CLIP state dict or its
    ``visual.*`` part. Errors name the file and the mismatching keys.
    """
    state = read_state_dict(path)
    if encoder.library == "open_clip":
        if any(k.startswith("visual.") for k in state):
            state = {k[len("visual."):]: v for k, v in state.items() if k.startswith("visual.")}
    else:
        classifier = _timm_classifier_prefix(encoder.model)
        if classifier:
            state = {k: v for k, v in state.items() if not k.startswith(classifier + ".")}
    own = encoder.model.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        raise CheckpointError(
            f"{path} does not fit image encoder {encoder.name}: missing {missing[:5]}, unexpected "
            f"{unexpected[:5]}, wrong shapes {wrong[:5]}"
        )
    encoder.model.load_state_dict(state)


def _timm_classifier_prefix(model: nn.Module) -> str | None:
    name = (getattr(model, "pretrained_cfg", None) or {}).get("classifier")
    return name.split(".")[0] if isinstance(name, str) else None


def save_backbone(encoder: ImageEncoder, path: str | Path) -> Path:
    """Write the encoder as safetensors in its own library's layout; metadata names the
    library and model, so ``timm.create_model(model, pretrained_cfg_overlay={"file": path})``
    or ``open_clip.create_model(model)`` + ``load_state_dict(strict=False)`` read it."""
    from safetensors.torch import save_file

    path = Path(path)
    metadata = {"library": encoder.library, "model": encoder.model_name,
                "image_size": str(encoder.image_size), "mean": json.dumps(encoder.mean), "std": json.dumps(encoder.std)}  # fmt: skip
    state = encoder.backbone_state_dict()
    return atomic_write(path, lambda temporary: save_file(state, temporary, metadata=metadata))
