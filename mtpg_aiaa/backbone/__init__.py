"""Long-CLIP backbone: architectures (``longclip``) and weight files (``convert``)."""
from .convert import (
    CheckpointError,
    build_longclip_from_state_dict,
    infer_arch,
    load_longclip,
    read_state_dict,
    stretch_positional_embedding,
    to_longclip_state_dict,
    to_release_layout,
)
from .longclip import (
    LONGCLIP_CONTEXT_LENGTH,
    LongCLIP,
    LongCLIPArch,
    create_longclip,
    get_arch,
    list_models,
    trim_text_tokens,
)

__all__ = [
    "CheckpointError",
    "LONGCLIP_CONTEXT_LENGTH",
    "LongCLIP",
    "LongCLIPArch",
    "build_longclip_from_state_dict",
    "create_longclip",
    "get_arch",
    "infer_arch",
    "list_models",
    "load_longclip",
    "read_state_dict",
    "stretch_positional_embedding",
    "to_longclip_state_dict",
    "to_release_layout",
    "trim_text_tokens",
]
