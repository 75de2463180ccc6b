"""One CG-IAA attribute expert: ClipCap's GPT-2 (``gpt.*``) driven by a transformer mapper
(``clip_project.*``), in the layout of the released ``color.pt`` / ``composition.pt`` /
``dof.pt`` / ``general.pt``.

Every size is read from the tensors: GPT-2's width, depth, vocabulary, context and MLP width
(heads = width / 64, as in every GPT-2), the mapper's lengths, depth and MLP width (8 heads,
as released).
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from mtpg_aiaa.backbone.convert import CheckpointError, load_state_dict_strict, read_state_dict
from mtpg_aiaa.backbone.freezing import check_policy
from mtpg_aiaa.fileio import atomic_write
from mtpg_aiaa.models.base import SavedModel

from .mapper import MapperConfig, TransformerMapper, infer_mapper_config

GPT2_HEAD_DIM = 64
GPT_PREFIX, MAPPER_PREFIX = "gpt.", "clip_project."
# Buffers that transformers < 4.3x saved in every GPT-2 state dict (the causal mask and its
# fill value); current GPT-2 rebuilds both, so they carry no weights.
_LEGACY_BUFFER = re.compile(r"^gpt\.transformer\.h\.\d+\.attn\.(bias|masked_bias)$")
# The LM head shares GPT-2's token embedding; files store it under both names.
_TIED_HEAD = "lm_head.weight"


@dataclass(frozen=True)
class GPT2Sizes:
    """The GPT-2 numbers a state dict fixes (GPT-2 small: 50257, 1024, 768, 12, 3072)."""

    vocab_size: int = 50257
    n_positions: int = 1024
    n_embd: int = 768
    n_layer: int = 12
    n_inner: int = 3072

    def to_config(self) -> GPT2Config:
        eos = min(50256, self.vocab_size - 1)
        return GPT2Config(
            vocab_size=self.vocab_size, n_positions=self.n_positions, n_embd=self.n_embd, n_layer=self.n_layer,
            n_head=max(1, self.n_embd // GPT2_HEAD_DIM), n_inner=self.n_inner, bos_token_id=eos, eos_token_id=eos,
        )  # fmt: skip

    def to_dict(self) -> dict:
        return asdict(self)


def infer_gpt2_sizes(state_dict: Mapping[str, torch.Tensor]) -> GPT2Sizes:
    """GPT-2 sizes from ``transformer.*`` tensors (keys without the ``gpt.`` prefix)."""
    vocab_size, n_embd = state_dict["transformer.wte.weight"].shape
    return GPT2Sizes(
        vocab_size=vocab_size,
        n_positions=state_dict["transformer.wpe.weight"].shape[0],
        n_embd=n_embd,
        n_layer=len({k.split(".")[2] for k in state_dict if k.startswith("transformer.h.")}),
        n_inner=state_dict["transformer.h.0.mlp.c_fc.weight"].shape[1],
    )


class CritiqueExpert(SavedModel):
    """``gpt`` (GPT2LMHeadModel) + ``clip_project`` (TransformerMapper): a prefix captioner.

    Saved by ``train.py`` as ``model=expert`` of system ``cgiaa`` (its tensors in the released
    layout, the tied LM head left out, so ``load_expert`` reads the file too)."""

    system = "cgiaa"
    model_kind = "expert"
    init_from_whole = (GPT_PREFIX,)  # init_from loads GPT-2 whole or not at all
    tied_keys = (GPT_PREFIX + _TIED_HEAD,)

    def __init__(self, gpt_sizes: GPT2Sizes = GPT2Sizes(), mapper: MapperConfig = MapperConfig()):
        super().__init__()
        if mapper.embed_dim != gpt_sizes.n_embd:
            raise ValueError(f"mapper width {mapper.embed_dim} differs from GPT-2's {gpt_sizes.n_embd}")
        self.gpt_sizes, self.mapper_config = gpt_sizes, mapper
        config = gpt_sizes.to_config()
        # eager attention: the arithmetic of the transformers versions the experts ran under
        config._attn_implementation = "eager"
        self.gpt = GPT2LMHeadModel(config)
        self.clip_project = TransformerMapper(mapper)
        self.gpt_frozen = False

    def freeze_gpt(self, frozen: bool = True) -> "CritiqueExpert":
        """ClipCap's "train only the mapper" recipe: GPT-2 gets no gradient and stays in eval
        mode (no dropout) even while the expert trains."""
        self.gpt_frozen = frozen
        self.gpt.requires_grad_(not frozen)
        return self.train(self.training)

    def set_freeze(self, policy: str, last_n: int = 0) -> None:
        """``model.freeze`` (``backbone/freezing.py``): GPT-2 ``frozen`` (ClipCap's "only the
        mapper", :meth:`freeze_gpt`) or ``full`` (GPT-2 trains too)."""
        check_policy(policy, ("frozen", "full"), "a CG-IAA expert")
        self.freeze_gpt(policy == "frozen")

    def train(self, mode: bool = True) -> "CritiqueExpert":
        super().train(mode)
        if self.gpt_frozen:
            self.gpt.eval()
        return self

    @property
    def prefix_length(self) -> int:
        return self.mapper_config.prefix_length

    def prefix_embeddings(self, prefix: torch.Tensor) -> torch.Tensor:
        """Normalised CLIP features ``[B, clip_dim]`` -> GPT-2 input embeddings ``[B, prefix_length, D]``."""
        return self.clip_project(prefix)

    def forward(self, tokens: torch.Tensor, prefix: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Teacher-forced logits ``[B, prefix_length + L, V]`` for ``tokens [B, L]`` after the prefix;
        ``mask [B, prefix_length + L]`` (1 = attend) as ClipCap passes it."""
        embeddings = torch.cat([self.prefix_embeddings(prefix), self.gpt.transformer.wte(tokens)], dim=1)
        return self.gpt(inputs_embeds=embeddings, attention_mask=mask).logits

    def release_state_dict(self) -> dict[str, torch.Tensor]:
        """The tensors in the released layout (``gpt.*`` with the tied head, ``clip_project.*``)."""
        return {k: v.detach().clone() for k, v in self.state_dict().items()}

    def config_dict(self) -> dict:
        return {"gpt": self.gpt_sizes.to_dict(), "mapper": self.mapper_config.to_dict(), "gpt_frozen": self.gpt_frozen}

    @classmethod
    def from_config(cls, config: dict) -> "CritiqueExpert":
        """An expert of a saved config (``{"gpt": GPT2Sizes, "mapper": MapperConfig, "gpt_frozen"}``)."""
        from ..checkpoints import check_config

        check_config(_ExpertConfig, config, "its metadata")
        gpt = check_config(GPT2Sizes, config.get("gpt", {}), "its metadata", "config.gpt")
        mapper = check_config(MapperConfig, config.get("mapper", {}), "its metadata", "config.mapper")
        return cls(GPT2Sizes(**gpt), MapperConfig(**mapper)).freeze_gpt(bool(config.get("gpt_frozen", False)))


@dataclass(frozen=True)
class _ExpertConfig:
    """The keys of ``CritiqueExpert.config_dict`` (checked when a file is read)."""

    gpt: dict
    mapper: dict
    gpt_frozen: bool = False


def create_expert(gpt2_weights: str | Path | None = None, freeze_gpt: bool = True, **mapper: int) -> CritiqueExpert:
    """A new expert for training: GPT-2 from a local ``save_pretrained`` folder (``gpt2_weights``; random
    when ``None``), a fresh mapper of ``MapperConfig(**mapper)`` sizes (width taken from GPT-2)."""
    sizes = GPT2Sizes()
    pretrained = None
    if gpt2_weights is not None:
        pretrained = GPT2LMHeadModel.from_pretrained(str(gpt2_weights), local_files_only=True)
        sizes = infer_gpt2_sizes(pretrained.state_dict())
    expert = CritiqueExpert(sizes, MapperConfig(**{**mapper, "embed_dim": sizes.n_embd}))
    if pretrained is not None:
        load_state_dict_strict(expert.gpt, pretrained.state_dict(), str(gpt2_weights))
    return expert.freeze_gpt(freeze_gpt)


def build_expert_from_state_dict(state_dict: Mapping[str, torch.Tensor], source: str = "state dict") -> CritiqueExpert:
    """A :class:`CritiqueExpert` of the sizes the tensors have, loaded strictly (fp32).

    Legacy GPT-2 mask buffers are dropped; ``gpt.lm_head.weight`` may be absent (it is tied to
    ``gpt.transformer.wte.weight``) but, when present, must equal it. Any other missing,
    unexpected or mis-shaped key is an error naming ``source`` and the key.
    """
    tensors = {k: v.float() if v.is_floating_point() else v for k, v in state_dict.items() if not _LEGACY_BUFFER.match(k)}
    gpt = {k[len(GPT_PREFIX):]: v for k, v in tensors.items() if k.startswith(GPT_PREFIX)}
    mapper = {k[len(MAPPER_PREFIX):]: v for k, v in tensors.items() if k.startswith(MAPPER_PREFIX)}
    try:
        sizes, mapper_config = infer_gpt2_sizes(gpt), infer_mapper_config(mapper)
    except KeyError as missing:
        prefix = GPT_PREFIX if str(missing.args[0]).startswith("transformer.") else MAPPER_PREFIX
        raise CheckpointError(
            f"{source} is not a CG-IAA expert (gpt.* + clip_project.*): key '{prefix}{missing.args[0]}' is missing"
        ) from None
    head = tensors.get(GPT_PREFIX + _TIED_HEAD)
    if head is not None and not torch.equal(head, gpt["transformer.wte.weight"]):
        raise CheckpointError(f"{source}: '{GPT_PREFIX}{_TIED_HEAD}' differs from the token embedding it is tied to")
    tensors.setdefault(GPT_PREFIX + _TIED_HEAD, gpt["transformer.wte.weight"])
    try:
        expert = CritiqueExpert(sizes, mapper_config)
    except ValueError as error:
        raise CheckpointError(f"{source}: {error}") from None
    load_state_dict_strict(expert, tensors, source)
    return expert


def load_expert(path: str | Path, device: str | torch.device = "cpu") -> CritiqueExpert:
    """Load a released (or our) expert file with ``weights_only=True``; ``eval()`` mode."""
    return build_expert_from_state_dict(read_state_dict(path), source=str(path)).to(device).eval()


def save_expert(expert: CritiqueExpert, path: str | Path) -> Path:
    """Write ``expert`` in the released layout: weights-only ``.pt``, or ``.safetensors`` by suffix."""
    tensors = expert.release_state_dict()
    if Path(path).suffix == ".safetensors":
        from safetensors.torch import save_file

        tensors.pop(GPT_PREFIX + _TIED_HEAD)  # safetensors refuses shared storage; the loader re-ties it
        return atomic_write(path, lambda tmp: save_file({k: v.contiguous() for k, v in tensors.items()}, tmp))
    return atomic_write(path, lambda tmp: torch.save(tensors, tmp))
