"""GalleryGPT -> llava-hf conversion on a tiny fabricated checkpoint in GalleryGPT's layout."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import save_file
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import (
    CLIPImageProcessor,
    CLIPVisionConfig,
    CLIPVisionModel,
    LlamaConfig,
    LlamaForCausalLM,
    LlavaForConditionalGeneration,
    PreTrainedTokenizerFast,
)

from helpers import load_script
from mtpg_aiaa.describe import (
    VICUNA_V1_CHAT_TEMPLATE,
    DescriberSettings,
    MissingFilesError,
    load_describer,
)
from mtpg_aiaa.describe.convert import convert_gallerygpt, hf_key
from mtpg_aiaa.describe.tiny import ART_WORDS

convert_main = load_script("scripts/convert_gallerygpt.py").main

RANK, ALPHA = 4, 8  # scale 2, as GalleryGPT's r=128, alpha=256
TARGETS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
           "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")  # fmt: skip
LLAVA_CONFIG = {  # GalleryGPT's config.json in miniature
    "architectures": ["LLaVALlamaForCausalLM"], "model_type": "llava", "hidden_act": "silu", "hidden_size": 32,
    "intermediate_size": 64, "num_attention_heads": 4, "num_hidden_layers": 2, "num_key_value_heads": 4,
    "max_position_embeddings": 256, "rms_norm_eps": 1e-5, "rope_scaling": None, "tie_word_embeddings": False,
    "mm_hidden_size": 32, "mm_projector_type": "mlp2x_gelu", "mm_use_im_start_end": False,
    "mm_vision_select_feature": "patch", "mm_vision_select_layer": -2, "image_aspect_ratio": "pad",
    "mm_vision_tower": "Lin-Chen/ShareGPT4V-7B_Pretrained_vit-large336-l12", "torch_dtype": "float32",
    "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0,
}  # fmt: skip


def llama_tokenizer() -> PreTrainedTokenizerFast:
    """A LLaMA-like tokenizer without ``<image>`` or ``<pad>`` (the converter adds them)."""
    words = list(dict.fromkeys(["<unk>", "<s>", "</s>", *ART_WORDS, "USER", "ASSISTANT", "<", ">", "image"]))
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("gallerygpt")
    base, lora, vision = root / "ShareGPT4V-7B", root / "GalleryGPT", root / "vit-large336-l12"
    for directory in (base, lora, vision):
        directory.mkdir()
    torch.manual_seed(0)
    tokenizer = llama_tokenizer()
    tokenizer.save_pretrained(base)
    vocab = len(tokenizer)
    config = {**LLAVA_CONFIG, "vocab_size": vocab}
    llama = LlamaForCausalLM(LlamaConfig(**{k: config[k] for k in (
        "hidden_size", "intermediate_size", "num_attention_heads", "num_hidden_layers", "num_key_value_heads",
        "max_position_embeddings", "rms_norm_eps", "vocab_size")}, initializer_range=0.2))  # fmt: skip
    state = {key: value.clone() for key, value in llama.state_dict().items()}
    state.update({"model.mm_projector.0.weight": torch.randn(32, 32), "model.mm_projector.0.bias": torch.randn(32),
                  "model.mm_projector.2.weight": torch.randn(32, 32), "model.mm_projector.2.bias": torch.randn(32),
                  "model.layers.0.self_attn.rotary_emb.inv_freq": torch.ones(4)})  # fmt: skip
    keys = sorted(state)
    shards = {"pytorch_model-00001-of-00002.bin": keys[: len(keys) // 2],
              "pytorch_model-00002-of-00002.bin": keys[len(keys) // 2 :]}  # fmt: skip
    for name, shard_keys in shards.items():
        torch.save({key: state[key] for key in shard_keys}, base / name)
    weight_map = {key: name for name, shard_keys in shards.items() for key in shard_keys}
    (base / "pytorch_model.bin.index.json").write_text(json.dumps({"weight_map": weight_map}))
    (base / "config.json").write_text(json.dumps(config))

    pairs = {}
    for layer in range(2):
        for target in TARGETS:
            weight = state[f"model.layers.{layer}.{target}.weight"]
            pairs[f"model.layers.{layer}.{target}"] = (torch.randn(RANK, weight.shape[1]) * 0.3,
                                                       torch.randn(weight.shape[0], RANK) * 0.3)  # fmt: skip
    adapter = {}
    for module, (a, b) in pairs.items():
        adapter[f"base_model.model.{module}.lora_A.weight"] = a
        adapter[f"base_model.model.{module}.lora_B.weight"] = b
    torch.save(adapter, lora / "adapter_model.bin")
    (lora / "adapter_config.json").write_text(json.dumps(
        {"peft_type": "LORA", "r": RANK, "lora_alpha": ALPHA, "target_modules": ["q_proj", "k_proj", "v_proj",
         "o_proj", "gate_proj", "up_proj", "down_proj"], "fan_in_fan_out": False}))  # fmt: skip
    projector = {f"base_model.model.model.mm_projector.{i}.{p}": torch.randn(*((32, 32) if p == "weight" else (32,)))
                 for i in (0, 2) for p in ("weight", "bias")}  # fmt: skip
    torch.save(projector, lora / "non_lora_trainables.bin")
    (lora / "config.json").write_text(json.dumps(config))

    clip = CLIPVisionModel(CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                            num_attention_heads=4, image_size=32, patch_size=8))  # fmt: skip
    clip.config.save_pretrained(vision)
    # Hub checkpoints of CLIP towers use the older ``vision_model.`` key prefix.
    legacy = {f"vision_model.{key}": value.contiguous() for key, value in clip.state_dict().items()}
    save_file(legacy, str(vision / "model.safetensors"))
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size=32).save_pretrained(vision)
    return {"base": base, "lora": lora, "vision": vision, "state": state, "pairs": pairs, "projector": projector,
            "clip": clip.state_dict(), "vocab": vocab}  # fmt: skip


@pytest.fixture(scope="module")
def converted(sources, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("converted") / "gallerygpt-hf"
    code = convert_main(["--base", str(sources["base"]), "--lora", str(sources["lora"]),
                         "--vision-tower", str(sources["vision"]), "--out", str(out)])  # fmt: skip
    assert code == 0
    return out


def test_converted_model_loads_with_merged_weights(sources, converted):
    model, info = LlavaForConditionalGeneration.from_pretrained(converted, local_files_only=True,
                                                                output_loading_info=True)  # fmt: skip
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    weights = model.state_dict()
    for module, (a, b) in sources["pairs"].items():
        expected = sources["state"][f"{module}.weight"] + (ALPHA / RANK) * b @ a
        merged = weights[f"model.language_model.{module.removeprefix('model.')}.weight"]
        torch.testing.assert_close(merged, expected, rtol=0, atol=1e-5)
        assert not torch.allclose(merged, sources["state"][f"{module}.weight"], atol=1e-3)
    projector = sources["projector"]
    torch.testing.assert_close(weights["model.multi_modal_projector.linear_1.weight"],
                               projector["base_model.model.model.mm_projector.0.weight"])  # not the base's
    torch.testing.assert_close(weights["model.multi_modal_projector.linear_2.bias"],
                               projector["base_model.model.model.mm_projector.2.bias"])  # fmt: skip
    torch.testing.assert_close(weights["model.vision_tower.embeddings.patch_embedding.weight"],
                               sources["clip"]["embeddings.patch_embedding.weight"])  # fmt: skip
    assert model.config.vision_feature_layer == -2 and model.config.vision_feature_select_strategy == "default"


def test_converted_text_model_equals_the_merged_llama(sources, converted):
    """Same logits as LLaMA with the LoRA applied the slow way, on the original vocabulary."""
    model = LlavaForConditionalGeneration.from_pretrained(converted, local_files_only=True).eval()
    vocab = sources["vocab"]
    assert model.config.text_config.vocab_size == -(-(vocab + 2) // 64) * 64  # + <image>, <pad>
    assert model.config.image_token_index == vocab
    config = LlamaConfig(**{k: LLAVA_CONFIG[k] for k in ("hidden_size", "intermediate_size", "num_attention_heads",
                            "num_hidden_layers", "num_key_value_heads", "max_position_embeddings", "rms_norm_eps")},
                         vocab_size=vocab)  # fmt: skip
    llama = LlamaForCausalLM(config).eval()
    state = {k: v for k, v in sources["state"].items() if not k.startswith("model.mm_") and "inv_freq" not in k}
    for module, (a, b) in sources["pairs"].items():
        state[f"{module}.weight"] = state[f"{module}.weight"] + (ALPHA / RANK) * b @ a
    llama.load_state_dict(state)
    ids = torch.tensor([[1, 5, 9, 30, 2, 44, 7]])
    with torch.no_grad():
        expected = llama(input_ids=ids).logits
        got = model(input_ids=ids).logits
    torch.testing.assert_close(got[..., :vocab], expected, rtol=1e-4, atol=1e-4)


def test_converted_processor_and_describer(converted):
    settings = DescriberSettings(model_path=str(converted), max_new_tokens=4, device="cpu")
    describer = load_describer(settings)
    processor = describer.processor
    assert processor.chat_template == VICUNA_V1_CHAT_TEMPLATE and processor.image_processor.do_pad
    assert processor.tokenizer.convert_tokens_to_ids("<image>") == describer.model.config.image_token_index
    assert processor.tokenizer.pad_token == "<pad>"
    generation = describer.describe([Image.new("RGB", (40, 24), (200, 120, 30))])[0]
    assert generation.new_tokens >= 1 and generation.stop in ("eos", "budget")


def test_missing_files_are_each_named(sources, tmp_path):
    base, lora = tmp_path / "base", tmp_path / "lora"
    shutil.copytree(sources["base"], base)
    shutil.copytree(sources["lora"], lora)
    (lora / "non_lora_trainables.bin").unlink()
    (base / "tokenizer.json").unlink()
    (base / "pytorch_model-00002-of-00002.bin").unlink()
    with pytest.raises(MissingFilesError) as error:
        convert_gallerygpt(base, lora, tmp_path / "out")  # and no vision tower given
    message = str(error.value)
    assert str(lora / "non_lora_trainables.bin") in message and "projector" in message
    assert str(base / "tokenizer.json") in message
    assert str(base / "pytorch_model-00002-of-00002.bin") in message
    assert "--vision-tower" in message and "Lin-Chen/ShareGPT4V-7B_Pretrained_vit-large336-l12" in message
    assert len(error.value.missing) == 4 and not (tmp_path / "out").exists()


def test_cli_reports_missing_files_and_refuses_to_overwrite(sources, converted, capsys, tmp_path):
    assert convert_main(["--base", str(tmp_path / "nope"), "--lora", str(sources["lora"]),
                         "--vision-tower", str(sources["vision"]), "--out", str(tmp_path / "o")]) == 2  # fmt: skip
    assert f"{tmp_path / 'nope'} (does not exist)" in capsys.readouterr().err
    assert convert_main(["--base", str(sources["base"]), "--lora", str(sources["lora"]),
                         "--vision-tower", str(sources["vision"]), "--out", str(converted)]) == 2  # fmt: skip
    assert "--overwrite" in capsys.readouterr().err


def test_key_mapping():
    assert hf_key("model.layers.3.mlp.up_proj.weight") == "model.language_model.layers.3.mlp.up_proj.weight"
    assert hf_key("model.embed_tokens.weight") == "model.language_model.embed_tokens.weight"
    assert hf_key("lm_head.weight") == "lm_head.weight"
    assert hf_key("model.mm_projector.2.bias") == "model.multi_modal_projector.linear_2.bias"
    assert hf_key("model.vision_tower.vision_tower.vision_model.post_layernorm.weight") == \
        "model.vision_tower.post_layernorm.weight"
    assert hf_key("model.something_new.weight") is None
