"""Qwen2 / Qwen2.5: the llama block with biases on the q/k/v projections."""

from __future__ import annotations

from dataclasses import dataclass

from .llama import Model as LlamaModel
from .llama import ModelArgs as LlamaArgs


@dataclass
class ModelArgs(LlamaArgs):
    qkv_bias: bool = True
    rope_theta: float = 1000000.0


class Model(LlamaModel):
    pass
