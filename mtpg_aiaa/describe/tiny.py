"""A tiny randomly initialised LLaVA in the llava-hf layout, for tests and dry runs (no download).

    python -m mtpg_aiaa.describe.tiny outputs/tiny_llava

It has GalleryGPT's architecture in miniature (LLaMA text model, CLIP vision tower read at
its second-to-last layer, two-layer GELU projector, Vicuna v1 chat template) and a
word-level tokenizer over a few hundred art words, so its gibberish reads like a
description. Its descriptions mean nothing.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from mtpg_aiaa.describe.template import IMAGE_TOKEN, VICUNA_V1_CHAT_TEMPLATE, VICUNA_V1_SYSTEM

SPECIAL_TOKENS = ("<unk>", "<s>", "</s>", "<pad>", IMAGE_TOKEN)
ART_WORDS = """
the a an of and with in on by to is are its as that which while from into across
painting canvas artist work composition figure figures subject background foreground
colour colours color palette hue tone tones light shadow shadows contrast depth space
brushwork brushstrokes strokes texture surface line lines shape shapes form forms
bold soft thick thin loose precise expressive vibrant muted warm cool dark bright deep
red blue yellow green orange violet ochre umber white black grey golden earthy pastel
balance harmony rhythm movement energy calm tension perspective horizon sky sea field
portrait landscape still life abstract realistic impressionist dramatic delicate
central left right upper lower edge edges centre eye viewer gaze sense mood atmosphere
creates conveys suggests highlights draws adds emphasises evokes renders captures
layered blended rough smooth dense sparse flat luminous translucent opaque
. , ; :
""".split()
PROMPT_WORDS = sorted({w for w in (VICUNA_V1_SYSTEM + " USER ASSISTANT Please construct formal analysis "
                                   "paragraph approximately 100 words coherent focuses solely visual "
                                   "characteristics").replace(".", " ").replace(",", " ").split()})


def build_tiny_tokenizer():
    """Word-level tokenizer: ``<s>`` prepended like LLaMA's, ``<image>`` a special token."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    words = list(dict.fromkeys([*SPECIAL_TOKENS, *ART_WORDS, *PROMPT_WORDS]))
    backend = Tokenizer(models.WordLevel({word: i for i, word in enumerate(words)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
        pad_token="<pad>", extra_special_tokens={"image_token": IMAGE_TOKEN},
    )  # fmt: skip


def tiny_llava_config(vocab_size: int, image_token_index: int, image_size: int = 32, patch_size: int = 8):
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig

    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                              image_size=image_size, patch_size=patch_size, projection_dim=32)  # fmt: skip
    # A wide initialisation keeps the logits far apart, so greedy choices do not hinge on
    # rounding differences between batch sizes.
    text = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                       num_key_value_heads=4, vocab_size=vocab_size, max_position_embeddings=1024,
                       initializer_range=0.5, bos_token_id=1, eos_token_id=2, pad_token_id=3)  # fmt: skip
    return LlavaConfig(vision_config=vision, text_config=text, image_token_index=image_token_index,
                       vision_feature_layer=-2, vision_feature_select_strategy="default",
                       projector_hidden_act="gelu", image_seq_length=(image_size // patch_size) ** 2)  # fmt: skip


def build_tiny_processor(tokenizer, image_size: int = 32, patch_size: int = 8):
    from transformers import LlavaImageProcessor, LlavaProcessor

    image_processor = LlavaImageProcessor(size={"shortest_edge": image_size},
                                          crop_size={"height": image_size, "width": image_size})  # fmt: skip
    return LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=patch_size,
                          vision_feature_select_strategy="default", num_additional_image_tokens=1,
                          chat_template=VICUNA_V1_CHAT_TEMPLATE)  # fmt: skip


def write_tiny_llava(out_dir: str | Path, seed: int = 0) -> Path:
    """Save a tiny random ``LlavaForConditionalGeneration`` + processor to ``out_dir``.

    The end-of-sequence logit is pinned to 0 (its ``lm_head`` row zeroed) so the model,
    whose other logits are large, writes until its token budget: tests need long outputs.
    """
    from transformers import LlavaForConditionalGeneration

    out_dir = Path(out_dir)
    tokenizer = build_tiny_tokenizer()
    image_token_index = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(tiny_llava_config(len(tokenizer), image_token_index)).eval()
    with torch.no_grad():
        model.lm_head.weight[tokenizer.eos_token_id].zero_()
    model.save_pretrained(out_dir)
    build_tiny_processor(tokenizer).save_pretrained(out_dir)
    return out_dir


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(write_tiny_llava(args.out_dir, seed=args.seed))


if __name__ == "__main__":
    main()
