"""One module per architecture family; each exposes `ModelArgs` and `Model`."""

from __future__ import annotations

from . import llama, qwen2

FAMILIES = {
    "llama": llama,
    "mistral": llama,
    "smollm": llama,
    "qwen2": qwen2,
}


def family(model_type: str):
    """The module implementing `model_type`, or None when unsupported."""
    return FAMILIES.get(model_type) if isinstance(model_type, str) else None
