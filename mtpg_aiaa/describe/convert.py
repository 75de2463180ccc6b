"""GalleryGPT (LoRA + projector on ShareGPT4V-7B, original LLaVA layout) -> llava-hf layout.

Inputs, as released upstream:

* ``base``: ShareGPT4V-7B (``LlavaLlamaForCausalLM``): ``config.json``, LLaMA + projector
  weights (``pytorch_model-*.bin`` or ``*.safetensors``, with an index when sharded),
  the LLaMA tokenizer;
* ``lora``: GalleryGPT: ``adapter_config.json``, ``adapter_model.bin|safetensors`` (PEFT
  keys ``base_model.model.<module>.lora_{A,B}.weight``) and ``non_lora_trainables.bin``
  (the re-trained projector ``model.mm_projector.{0,2}.*``, the file users most often lack);
* ``vision_tower``: ShareGPT4V's CLIP ViT-L/14-336 in Hugging Face layout.

Each LoRA target ``W`` becomes ``W + (lora_alpha / r) * B @ A`` (computed in fp32), the
projector is replaced by GalleryGPT's, and keys are renamed to what this version of
``transformers`` expects for ``LlavaForConditionalGeneration``; the result is checked
against a meta-device instance before the output directory appears (written to a
temporary directory, then renamed). As llava-hf does, ``<image>`` and ``<pad>`` are added
to the tokenizer and the embedding / ``lm_head`` matrices grow to a multiple of 64 rows; the
new rows are the mean of the old ones (their values never matter: ``<image>`` embeddings
are replaced by image features and ``<pad>`` positions are masked).
"""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
import warnings
from pathlib import Path
from typing import Any, Iterator

import torch

from mtpg_aiaa.describe.files import MissingFilesError, Requirement, missing_requirements
from mtpg_aiaa.describe.lora import LoraAdapter, load_lora_adapter, merge_lora_weight, strip_peft_prefix
from mtpg_aiaa.describe.template import IMAGE_TOKEN, VICUNA_V1_CHAT_TEMPLATE
from mtpg_aiaa.describe.weights import load_state_file, weight_files

logger = logging.getLogger(__name__)

PAD_TOKEN = "<pad>"
VOCAB_MULTIPLE = 64
_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
_WEIGHTS = ("model.safetensors.index.json", "pytorch_model.bin.index.json", "model.safetensors",
            "pytorch_model.bin", "pytorch_model-*.bin", "model-*.safetensors")  # fmt: skip

BASE_REQUIREMENTS = [
    Requirement(("config.json",), "ShareGPT4V-7B's configuration"),
    Requirement(_WEIGHTS, "ShareGPT4V-7B's weights"),
    Requirement(("tokenizer.model", "tokenizer.json"), "the LLaMA tokenizer"),
]
LORA_REQUIREMENTS = [
    Requirement(("adapter_config.json",), "GalleryGPT's LoRA configuration"),
    Requirement(("adapter_model.safetensors", "adapter_model.bin"), "GalleryGPT's LoRA weights"),
    Requirement(("non_lora_trainables.bin",), "GalleryGPT's projector weights, released next to the adapter"),
]
VISION_REQUIREMENTS = [
    Requirement(("config.json",), "the CLIP vision tower's configuration"),
    Requirement(_WEIGHTS, "the CLIP vision tower's weights"),
]

_PROJECTOR_KEY = re.compile(r"^model\.mm_projector\.(?P<layer>[02])\.(?P<param>weight|bias)$")
_VISION_IN_BASE = "model.vision_tower.vision_tower."
# LLaVA's mm_vision_select_feature -> llava-hf's vision_feature_select_strategy
_SELECT_STRATEGY = {"patch": "default", "cls_patch": "full"}


def check_sources(base: Path, lora: Path, vision_tower: Path | None) -> Path:
    """Raise one :class:`MissingFilesError` naming every missing input file; returns the vision dir."""
    missing = missing_requirements(base, BASE_REQUIREMENTS)
    missing += missing_requirements(lora, LORA_REQUIREMENTS)
    if vision_tower is None:
        named = _read_json(base / "config.json").get("mm_vision_tower") if (base / "config.json").is_file() else None
        if named and Path(named).is_dir():
            vision_tower = Path(named)
        else:
            missing.append(f"--vision-tower DIR (the CLIP vision tower; the base config names {named!r}, "
                           "which is not a local directory)")  # fmt: skip
    if vision_tower is not None:
        missing += missing_requirements(vision_tower, VISION_REQUIREMENTS)
    for directory in (base, vision_tower):
        if directory is not None and directory.is_dir():
            missing += [f"{path} (a weight shard listed in the index)" for path in weight_files(directory)
                        if not path.is_file()]  # fmt: skip
    if missing:
        raise MissingFilesError("cannot convert GalleryGPT", missing)
    return vision_tower  # type: ignore[return-value]


def load_projector(lora_dir: Path) -> dict[str, torch.Tensor]:
    """GalleryGPT's projector from ``non_lora_trainables.bin``, as ``model.mm_projector.*`` keys."""
    path = lora_dir / "non_lora_trainables.bin"
    projector, unknown = {}, []
    for key, value in load_state_file(path).items():
        name = strip_peft_prefix(key)
        if name.startswith("model.model."):  # saved from a PeftModel twice wrapped, as LLaVA handles
            name = name[len("model."):]
        if _PROJECTOR_KEY.match(name):
            projector[name] = value
        else:
            unknown.append(key)
    if unknown:
        raise ValueError(f"{path}: unexpected non-LoRA weights {unknown[:10]}; only the projector is converted")
    if len(projector) != 4:
        raise ValueError(f"{path}: expected the 4 projector tensors model.mm_projector.{{0,2}}.{{weight,bias}}, "
                         f"found {sorted(projector)}")  # fmt: skip
    return projector


def hf_key(key: str) -> str | None:
    """Original LLaVA key -> ``LlavaForConditionalGeneration`` key (``None``: not converted here)."""
    if key == "lm_head.weight":
        return key
    if key.startswith(("model.layers.", "model.embed_tokens.", "model.norm.")):
        return "model.language_model." + key[len("model."):]
    match = _PROJECTOR_KEY.match(key)
    if match:
        return f"model.multi_modal_projector.linear_{1 if match['layer'] == '0' else 2}.{match['param']}"
    if key.startswith(_VISION_IN_BASE + "vision_model."):
        return "model.vision_tower." + key[len(_VISION_IN_BASE + "vision_model."):]
    return None


def convert_gallerygpt(
    base: str | os.PathLike,
    lora: str | os.PathLike,
    out: str | os.PathLike,
    vision_tower: str | os.PathLike | None = None,
    dtype: str = "auto",
    overwrite: bool = False,
) -> dict[str, Any]:
    """Write a llava-hf ``LlavaForConditionalGeneration`` directory to ``out``; returns a report.

    Args:
        dtype: ``auto`` keeps the base checkpoint's (GalleryGPT: bf16); ``fp16|bf16|fp32``.

    Raises:
        MissingFilesError: any input file is missing (every one is named).
        ValueError: an input does not have GalleryGPT's structure (the message says what).
    """
    from transformers import GenerationConfig

    base, lora, out = Path(base), Path(lora), Path(out)
    vision_dir = check_sources(base, lora, Path(vision_tower) if vision_tower else None)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass overwrite=True (--overwrite) to replace it")
    # GalleryGPT's own config (upstream copies it over the base's); either has the fields used here.
    llava_config = _read_json(next(d / "config.json" for d in (lora, base) if (d / "config.json").is_file()))
    _check_llava_options(llava_config)
    adapter = load_lora_adapter(lora)
    projector = load_projector(lora)
    tokenizer = _extended_tokenizer(base)
    vocab_size = -(-len(tokenizer) // VOCAB_MULTIPLE) * VOCAB_MULTIPLE
    vision_model = _load_vision_tower(vision_dir)
    target_dtype = _DTYPES[dtype] if dtype != "auto" else _base_dtype(llava_config)
    config = _llava_hf_config(llava_config, vision_model.config, tokenizer, vocab_size, target_dtype)
    expected = _expected_shapes(config)

    temp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(temp, ignore_errors=True)
    temp.mkdir(parents=True)
    try:
        weight_map: dict[str, str] = {}
        merged: set[str] = set()
        base_files = weight_files(base)
        total = len(base_files) + 1
        for number, path in enumerate(base_files, start=1):
            tensors = dict(_convert_base_shard(path, adapter, merged, vocab_size, target_dtype))
            _save_shard(temp, number, total, tensors, weight_map)
            logger.info("%s: %d tensors converted, %d of %d LoRA modules merged so far",
                        path.name, len(tensors), len(merged), len(adapter.pairs))  # fmt: skip
        extra = {f"model.vision_tower.{k}": v.to(target_dtype) for k, v in vision_model.state_dict().items()}
        if any(key.startswith("model.vision_tower.") for key in weight_map):
            logger.info("the base checkpoint holds a vision tower; using it, not %s's weights", vision_dir)
        extra = {k: v for k, v in extra.items() if k not in weight_map}  # a vision tower in the base wins
        extra.update({hf_key(k): v.to(target_dtype) for k, v in projector.items()})
        _save_shard(temp, total, total, extra, weight_map)
        unmerged = sorted(set(adapter.pairs) - merged)
        if unmerged:
            raise ValueError(f"LoRA modules with no weight in {base}: {unmerged[:10]}")
        _check_against(expected, temp, weight_map)
        total_size = sum((temp / name).stat().st_size for name in set(weight_map.values()))
        (temp / "model.safetensors.index.json").write_text(json.dumps(
            {"metadata": {"total_size": total_size}, "weight_map": dict(sorted(weight_map.items()))}, indent=2) + "\n")
        config.save_pretrained(temp)
        GenerationConfig(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id).save_pretrained(temp)  # fmt: skip
        _build_processor(vision_dir, config, tokenizer).save_pretrained(temp)
        if out.exists():
            shutil.rmtree(out)
        os.replace(temp, out)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    return {"out": str(out), "lora_modules_merged": len(merged), "lora_rank": adapter.rank,
            "lora_scale": adapter.scale, "vocab_size": vocab_size, "dtype": str(target_dtype),
            "image_token_index": config.image_token_index, "tensors": len(weight_map)}  # fmt: skip


def _convert_base_shard(
    path: Path, adapter: LoraAdapter, merged: set[str], vocab_size: int, dtype: torch.dtype
) -> Iterator[tuple[str, torch.Tensor]]:
    unknown = []
    for key, value in load_state_file(path).items():
        if key.endswith("rotary_emb.inv_freq") or _PROJECTOR_KEY.match(key):
            continue  # recomputed by transformers / replaced by GalleryGPT's projector
        name = hf_key(key)
        if name is None:
            unknown.append(key)
            continue
        module = key.removesuffix(".weight")
        if key.endswith(".weight") and module in adapter.pairs:
            value = merge_lora_weight(value, *adapter.pairs[module], adapter.scale)
            merged.add(module)
        if key in ("model.embed_tokens.weight", "lm_head.weight"):
            value = _grow_rows(value, vocab_size)
        yield name, value.to(dtype).contiguous()
    if unknown:
        raise ValueError(f"{path}: weights this converter does not know: {unknown[:10]}")


def _grow_rows(matrix: torch.Tensor, rows: int) -> torch.Tensor:
    if matrix.shape[0] > rows:
        raise ValueError(f"embedding has {matrix.shape[0]} rows, more than the tokenizer's {rows}")
    mean = matrix.float().mean(dim=0, keepdim=True).to(matrix.dtype)
    return torch.cat([matrix, mean.expand(rows - matrix.shape[0], -1)])


def _save_shard(directory: Path, number: int, total: int, tensors: dict, weight_map: dict) -> None:
    from safetensors.torch import save_file

    name = f"model-{number:05d}-of-{total:05d}.safetensors"
    duplicated = sorted(set(tensors) & set(weight_map))
    if duplicated:
        raise ValueError(f"weights found twice in the inputs: {duplicated[:10]}")
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(directory / name), metadata={"format": "pt"})
    weight_map.update({key: name for key in tensors})


def _check_against(expected: dict[str, tuple[int, ...]], directory: Path, weight_map: dict[str, str]) -> None:
    from safetensors import safe_open

    missing = sorted(set(expected) - set(weight_map))
    unexpected = sorted(set(weight_map) - set(expected))
    wrong = []
    for name in sorted(set(weight_map.values())):
        with safe_open(str(directory / name), framework="pt") as handle:
            for key in handle.keys():
                shape = tuple(handle.get_slice(key).get_shape())
                if key in expected and shape != expected[key]:
                    wrong.append(f"{key} {shape} != {expected[key]}")
    if missing or unexpected or wrong:
        raise ValueError(f"converted weights do not fit LlavaForConditionalGeneration: missing {missing[:10]}, "
                         f"unexpected {unexpected[:10]}, wrong shapes {wrong[:10]}")  # fmt: skip


def _expected_shapes(config) -> dict[str, tuple[int, ...]]:
    from transformers import LlavaForConditionalGeneration

    with torch.device("meta"):
        model = LlavaForConditionalGeneration(config)
    return {key: tuple(value.shape) for key, value in model.state_dict().items()}


def _check_llava_options(config: dict) -> None:
    problems = []
    if config.get("mm_projector_type", "linear") != "mlp2x_gelu":
        problems.append(f"mm_projector_type={config.get('mm_projector_type')!r} (llava-hf needs mlp2x_gelu)")
    if config.get("mm_use_im_start_end"):
        problems.append("mm_use_im_start_end=true (image start/end tokens are not supported)")
    if config.get("mm_vision_select_feature", "patch") not in _SELECT_STRATEGY:
        problems.append(f"mm_vision_select_feature={config.get('mm_vision_select_feature')!r}")
    if config.get("rope_scaling"):
        problems.append(f"rope_scaling={config['rope_scaling']!r}")
    if problems:
        raise ValueError("not a GalleryGPT/LLaVA-1.5 configuration: " + "; ".join(problems))


def _llava_hf_config(llava: dict, vision_config, tokenizer, vocab_size: int, dtype: torch.dtype):
    from transformers import LlamaConfig, LlavaConfig

    text = LlamaConfig(
        vocab_size=vocab_size, hidden_size=llava["hidden_size"], intermediate_size=llava["intermediate_size"],
        num_hidden_layers=llava["num_hidden_layers"], num_attention_heads=llava["num_attention_heads"],
        num_key_value_heads=llava.get("num_key_value_heads", llava["num_attention_heads"]),
        hidden_act=llava.get("hidden_act", "silu"), max_position_embeddings=llava.get("max_position_embeddings", 4096),
        rms_norm_eps=llava.get("rms_norm_eps", 1e-5),
        rope_parameters={"rope_type": "default", "rope_theta": float(llava.get("rope_theta", 10000.0))},
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False,
    )  # fmt: skip
    patches = (vision_config.image_size // vision_config.patch_size) ** 2
    config = LlavaConfig(
        text_config=text, vision_config=vision_config.to_dict(),
        image_token_index=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN), projector_hidden_act="gelu",
        vision_feature_layer=int(llava.get("mm_vision_select_layer", -2)),
        vision_feature_select_strategy=_SELECT_STRATEGY[llava.get("mm_vision_select_feature", "patch")],
        image_seq_length=patches, multimodal_projector_bias=True, tie_word_embeddings=False,
        pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    config.dtype = dtype
    return config


def _extended_tokenizer(base: Path):
    from transformers import AddedToken, AutoTokenizer

    try:
        with warnings.catch_warnings():  # the base config's `rope_scaling: null` is upstream's, not ours to fix
            warnings.filterwarnings("ignore", message=".*rope_scaling.*", category=FutureWarning)
            tokenizer = AutoTokenizer.from_pretrained(base, local_files_only=True)
    except Exception as error:  # noqa: BLE001 - many causes; all mean the same to the user
        raise ValueError(f"cannot load the LLaMA tokenizer from {base}: {error} (a tokenizer.model-only "
                         "directory needs the `sentencepiece` package)") from error  # fmt: skip
    tokenizer.add_tokens([AddedToken(IMAGE_TOKEN, special=True, normalized=False)], special_tokens=True)
    tokenizer.add_special_tokens({"pad_token": PAD_TOKEN})
    return tokenizer


def _load_vision_tower(vision_dir: Path):
    from transformers import CLIPVisionModel

    model, info = CLIPVisionModel.from_pretrained(vision_dir, local_files_only=True, output_loading_info=True)
    if info["missing_keys"]:
        raise ValueError(f"{vision_dir}: vision tower weights missing: {sorted(info['missing_keys'])[:10]}")
    return model


def _build_processor(vision_dir: Path, config, tokenizer):
    from transformers import LlavaImageProcessor, LlavaProcessor

    vision_config = config.vision_config
    preprocessor = vision_dir / "preprocessor_config.json"
    settings = _read_json(preprocessor) if preprocessor.is_file() else {}
    side = vision_config.image_size
    image_processor = LlavaImageProcessor(
        size={"shortest_edge": side}, crop_size={"height": side, "width": side},
        image_mean=settings.get("image_mean", [0.48145466, 0.4578275, 0.40821073]),
        image_std=settings.get("image_std", [0.26862954, 0.26130258, 0.27577711]),
        do_pad=True,  # LLaVA's image_aspect_ratio="pad": square with the mean colour first
    )  # fmt: skip
    return LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=vision_config.patch_size,
                          vision_feature_select_strategy=config.vision_feature_select_strategy,
                          num_additional_image_tokens=1, chat_template=VICUNA_V1_CHAT_TEMPLATE)  # fmt: skip


def _base_dtype(config: dict) -> torch.dtype:
    name = config.get("torch_dtype") or config.get("dtype") or "float16"
    return {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}.get(name, torch.float16)


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))
