"""The prompt GalleryGPT was trained with: LLaVA's Vicuna v1 conversation.

LLaVA's ``conv_vicuna_v1`` (``--version v1`` in GalleryGPT's training script) is
``SeparatorStyle.TWO`` with ``sep=" "``, ``sep2="</s>"`` and roles USER / ASSISTANT; its
``get_prompt()`` for one user turn that is waiting for an answer is::

    SYSTEM + " " + "USER: <image>\\n" + INSTRUCTION + " " + "ASSISTANT:"

(no space after the final colon; the image placeholder opens the user turn, followed by a
newline, as LLaVA inserts it when ``mm_use_im_start_end`` is false). Upstream's
``run_llava.py`` guesses the template from the folder name and falls back to ``llava_v0``
(``###Human: ... ###Assistant:``), which GalleryGPT never saw in training.
"""
from __future__ import annotations

IMAGE_TOKEN = "<image>"

VICUNA_V1_SYSTEM = (
    "A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions."
)

# A paraphrase family GalleryGPT was trained on (PaintingForm); ~100 words is ~130 LLaMA
# tokens and ~125 Long-CLIP tokens, well inside Long-CLIP's 248 (docs/descriptions.md).
DEFAULT_INSTRUCTION = (
    "Please construct a formal analysis paragraph of approximately 100 words that is "
    "coherent and focuses solely on visual characteristics."
)

# The same conversation as a Jinja chat template, saved with converted checkpoints so that
# ``processor.apply_chat_template`` reproduces :func:`vicuna_v1_prompt` exactly. Message
# content may be a string or a list of ``{"type": "image"}`` / ``{"type": "text"}`` items;
# images go first in a turn, as LLaVA places them.
VICUNA_V1_CHAT_TEMPLATE = (
    "{{ '" + VICUNA_V1_SYSTEM.replace("'", "\\'") + "' }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}"
    "{% if loop.first %}{{ ' ' }}{% endif %}{{ 'USER: ' }}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for item in message['content'] if item['type'] == 'image' %}{{ '" + IMAGE_TOKEN + "\\n' }}{% endfor %}"
    "{% for item in message['content'] if item['type'] == 'text' %}{{ item['text'] }}{% endfor %}"
    "{% endif %}{{ ' ' }}"
    "{% elif message['role'] == 'assistant' %}{{ 'ASSISTANT: ' }}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for item in message['content'] if item['type'] == 'text' %}{{ item['text'] }}{% endfor %}"
    "{% endif %}{{ '</s>' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)


def vicuna_v1_prompt(instruction: str, image_token: str = IMAGE_TOKEN) -> str:
    """One user turn with one image, ready for the assistant's answer (see module docstring)."""
    return f"{VICUNA_V1_SYSTEM} USER: {image_token}\n{instruction} ASSISTANT:"
