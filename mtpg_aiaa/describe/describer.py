"""Load a vision-language model from a local directory and describe paintings with it, greedily.

Two prompt styles cover GalleryGPT and other captioners in ``transformers``:

* ``template="vicuna_v1"``: the prompt is built here (:mod:`.template`), as GalleryGPT was
  trained; the checkpoint's own chat template, if any, is not consulted.
* ``template="chat"``: ``processor.apply_chat_template`` with one user turn (image + text),
  for any model whose processor ships a chat template (LLaVA-NeXT, Qwen2-VL, Idefics...).
* ``template="none"``: the instruction is the whole text prompt (or no text when empty),
  for plain captioners such as BLIP.

Decoding is greedy (``do_sample=False, num_beams=1``) whatever the checkpoint's
``generation_config.json`` says, so a description depends only on the weights, the image,
the prompt and the numerics (dtype, batch composition, hardware).
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from PIL import Image

from mtpg_aiaa.errors import SettingError
from mtpg_aiaa.describe.files import check_model_dir
from mtpg_aiaa.describe.images import mean_colour, pad_to_square
from mtpg_aiaa.describe.length import trim_to_last_sentence
from mtpg_aiaa.describe.template import DEFAULT_INSTRUCTION, vicuna_v1_prompt

logger = logging.getLogger(__name__)

TEMPLATES = ("vicuna_v1", "chat", "none")
PRECISIONS = ("auto", "fp32", "fp16", "bf16")
_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class DescriberSettings:
    """Everything that decides what a describer writes (``configs/describer/*.yaml``)."""

    model_path: str
    model_class: str = "LlavaForConditionalGeneration"
    template: str = "vicuna_v1"
    instruction: str = DEFAULT_INSTRUCTION
    max_new_tokens: int = 230
    trim_to_sentence: bool = True
    pad_to_square: bool = True
    precision: str = "auto"
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.template not in TEMPLATES:
            raise SettingError(f"describer template must be one of {TEMPLATES}, got {self.template!r}")
        if self.precision not in PRECISIONS:
            raise SettingError(f"describer precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.max_new_tokens < 1:
            raise SettingError(f"max_new_tokens must be positive, got {self.max_new_tokens}")

    @classmethod
    def from_config(cls, values: Mapping[str, Any]) -> "DescriberSettings":
        """From a ``configs/describer/*.yaml`` mapping (its ``name`` only labels outputs); an
        unknown key is refused naming it (a typo would otherwise be a ``TypeError`` traceback)."""
        unknown = sorted(set(values) - set(cls.__dataclass_fields__) - {"name"})
        if unknown:
            raise SettingError(f"unknown describer setting(s) {', '.join('describer.' + k for k in unknown)}; "
                               f"known: {', '.join(sorted(cls.__dataclass_fields__))}")  # fmt: skip
        return cls(**{key: value for key, value in values.items() if key != "name"})

    def fingerprint(self, device: torch.device) -> dict[str, Any]:
        """The settings a resumed run must share with the first one (the device may change)."""
        values = asdict(self)
        values.pop("device")
        values["model_path"] = str(Path(self.model_path).resolve())
        values["dtype"] = str(resolve_dtype(self.precision, device)).removeprefix("torch.")
        return values


@dataclass(frozen=True)
class Generation:
    """One description. ``stop`` is ``eos`` (the model finished) or ``budget``
    (``max_new_tokens`` reached); ``trimmed`` says an unfinished last sentence was dropped."""

    text: str
    new_tokens: int
    stop: str
    trimmed: bool


def resolve_dtype(precision: str, device: torch.device) -> torch.dtype:
    """``auto``: bf16 on CUDA when supported (GalleryGPT was trained in bf16), else fp16;
    fp32 on CPU, where half precision is slow and poorly supported."""
    if precision != "auto":
        return _DTYPES[precision]
    if device.type != "cuda":
        return torch.float32
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def finish_generation(
    token_ids: list[int], eos_ids: set[int], decode: Callable[[list[int]], str], trim_to_sentence: bool
) -> Generation:
    """Turn the new token ids of one sequence into a :class:`Generation` (cut at the first EOS)."""
    stop_at = next((i for i, token in enumerate(token_ids) if token in eos_ids), None)
    kept = token_ids if stop_at is None else token_ids[:stop_at]
    text = decode(kept).strip()
    trimmed = False
    if stop_at is None and trim_to_sentence:
        shorter = trim_to_last_sentence(text)
        trimmed, text = shorter != text, shorter
    return Generation(text=text, new_tokens=len(kept), stop="eos" if stop_at is not None else "budget",
                      trimmed=trimmed)  # fmt: skip


class Describer:
    """A loaded model + processor; :meth:`describe` turns PIL images into paragraphs."""

    def __init__(self, model, processor, settings: DescriberSettings, device: torch.device):
        self.model = model
        self.processor = processor
        self.settings = settings
        self.device = device
        self.dtype = resolve_dtype(settings.precision, device)
        self.tokenizer = getattr(processor, "tokenizer", processor)
        # Decoder-only models read the prompt from the right end: pad on the left.
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.prompt = self._build_prompt()
        self.eos_ids = _eos_ids(model, self.tokenizer)
        self.generation_config = _greedy_config(model, settings.max_new_tokens, self.eos_ids, self.tokenizer)

    def _build_prompt(self) -> str | None:
        instruction = self.settings.instruction
        if self.settings.template == "vicuna_v1":
            image_token = getattr(self.processor, "image_token", None) or "<image>"
            return vicuna_v1_prompt(instruction, image_token)
        if self.settings.template == "chat":
            if not getattr(self.processor, "chat_template", None):
                raise SettingError(
                    f"{self.settings.model_path} has no chat template; use describer.template=vicuna_v1 "
                    "or describer.template=none")  # fmt: skip
            messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": instruction}]}]
            return self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return instruction or None

    def _prepare(self, images: list[Image.Image]) -> list[Image.Image]:
        images = [image.convert("RGB") for image in images]
        image_processor = getattr(self.processor, "image_processor", None)
        if self.settings.pad_to_square and image_processor is not None:
            fill = mean_colour(getattr(image_processor, "image_mean", None) or (0.5, 0.5, 0.5))
            images = [pad_to_square(image, fill) for image in images]
        return images

    @torch.inference_mode()
    def describe(self, images: list[Image.Image]) -> list[Generation]:
        """One greedy generation per image, as a single batch (left-padded prompts)."""
        if not images:
            return []
        images = self._prepare(images)
        text = None if self.prompt is None else [self.prompt] * len(images)
        inputs = self.processor(images=images, text=text, return_tensors="pt", padding=True)
        inputs = {
            key: value.to(self.device, dtype=self.dtype if value.is_floating_point() else None)
            for key, value in inputs.items() if isinstance(value, torch.Tensor)
        }  # fmt: skip
        output = self.model.generate(**inputs, generation_config=self.generation_config)
        if not self.model.config.is_encoder_decoder and "input_ids" in inputs:
            output = output[:, inputs["input_ids"].shape[1]:]
        decode = lambda ids: self.tokenizer.decode(ids, skip_special_tokens=True)  # noqa: E731
        return [
            finish_generation(row.tolist(), self.eos_ids, decode, self.settings.trim_to_sentence)
            for row in output.cpu()
        ]


def _eos_ids(model, tokenizer) -> set[int]:
    configured = getattr(model.generation_config, "eos_token_id", None)
    if configured is None:
        configured = tokenizer.eos_token_id
    ids = configured if isinstance(configured, (list, tuple)) else [configured]
    return {int(i) for i in ids if i is not None}


def _greedy_config(model, max_new_tokens: int, eos_ids: set[int], tokenizer):
    from transformers import GenerationConfig

    # A fresh config: the checkpoint's may ask for sampling (upstream GalleryGPT: T=0.2).
    return GenerationConfig(
        do_sample=False, num_beams=1, max_new_tokens=max_new_tokens,
        eos_token_id=sorted(eos_ids) or None, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=getattr(model.generation_config, "bos_token_id", None),
    )  # fmt: skip


def load_describer(settings: DescriberSettings, device: torch.device | None = None) -> Describer:
    """Load ``settings.model_path`` (a local Hugging Face directory, never downloaded).

    Raises:
        MissingFilesError: the directory or one of its files is missing (all are named).
        ValueError: ``model_class`` is not a ``transformers`` class.
    """
    import transformers

    from mtpg_aiaa.device import resolve_device

    check_model_dir(settings.model_path)
    model_class = getattr(transformers, settings.model_class, None)
    if model_class is None or not hasattr(model_class, "from_pretrained"):
        raise SettingError(f"describer.model_class={settings.model_class!r} is not a transformers model class")
    device = device or resolve_device(settings.device)
    dtype = resolve_dtype(settings.precision, device)
    logger.info("loading describer %s (%s, %s) on %s", settings.model_path, settings.model_class, dtype, device)
    processor = transformers.AutoProcessor.from_pretrained(settings.model_path, local_files_only=True)
    model = model_class.from_pretrained(settings.model_path, dtype=dtype, local_files_only=True)
    model.to(device).eval()
    return Describer(model, processor, settings, device)
