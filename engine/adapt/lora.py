"""LoRA adapters on the draft's last blocks: build them for training, save, fuse or apply.

Training never touches the draft: it runs on copies of the chosen blocks that share the draft's
(frozen) weight arrays, with mlx-lm's LoRALinear around every linear layer. Using an adapter
either fuses it (W + scale * (A B)^T written into the draft's float linears; the originals are
kept for `remove`) or applies it (LoRALinear modules swapped in; used for quantized linears,
which cannot absorb the delta without requantizing).
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten, tree_unflatten
from mlx_lm.tuner.lora import LoRALinear

LINEARS = (nn.Linear, nn.QuantizedLinear)


def last_layers(model, count: int) -> list[int]:
    n = len(model.layers)
    return list(range(max(0, n - count), n))


def linear_names(block: nn.Module) -> list[str]:
    return [name for name, m in block.named_modules() if isinstance(m, LINEARS)]


def shared_copy(block: nn.Module) -> nn.Module:
    """A structural copy of `block` whose parameters are the very same (immutable) arrays."""
    memo = {id(a): a for _, a in tree_flatten(block.parameters())}
    return copy.deepcopy(block, memo)


@dataclass
class Adapter:
    """LoRA factors per (layer index, linear name): y = x W^T + scale * (x A) B."""

    layers: list[int]
    rank: int
    scale: float
    factors: dict[str, mx.array]  # "<layer>.<linear name>.lora_a|lora_b"

    @property
    def parameters(self) -> int:
        return sum(a.size for a in self.factors.values())

    def pairs(self):
        """(layer index, linear name, A, B) for every adapted linear."""
        for key in sorted(k for k in self.factors if k.endswith(".lora_a")):
            layer, name = key[: -len(".lora_a")].split(".", 1)
            yield int(layer), name, self.factors[key], self.factors[key[:-1] + "b"]

    def save(self, path: str | Path) -> None:
        meta = {"layers": json.dumps(self.layers), "rank": str(self.rank),
                "scale": repr(self.scale), "format": "canopy-lora-1"}
        mx.save_safetensors(str(path), self.factors, metadata=meta)

    @classmethod
    def load(cls, path: str | Path) -> Adapter:
        factors, meta = mx.load(str(path), return_metadata=True)
        return cls(json.loads(meta["layers"]), int(meta["rank"]), float(meta["scale"]), factors)


class LoRATail(nn.Module):
    """Trainable copies of the draft's last blocks; only the LoRA factors are trainable."""

    def __init__(self, model, layer_ids: list[int], rank: int, scale: float, seed: int = 0):
        super().__init__()
        self.layer_ids = list(layer_ids)
        self.rank, self.scale = rank, scale
        self.layers = [shared_copy(model.layers[i]) for i in layer_ids]
        self.freeze()
        key = mx.random.key(seed)
        for block in self.layers:
            swaps = []
            for name in linear_names(block):
                lora = LoRALinear.from_base(_module(block, name), r=rank, scale=scale)
                key, sub = mx.random.split(key)
                bound = 1 / lora.lora_a.shape[0] ** 0.5
                lora.lora_a = mx.random.uniform(-bound, bound, lora.lora_a.shape, key=sub)
                swaps.append((name, lora))
            block.update_modules(tree_unflatten(swaps))
        mx.eval(self.parameters())

    def __call__(self, h: mx.array) -> mx.array:
        for block in self.layers:
            h = block(h, "causal", None)
        return h

    def adapter(self) -> Adapter:
        factors = {}
        for layer, block in zip(self.layer_ids, self.layers):
            for name, m in block.named_modules():
                if isinstance(m, LoRALinear):
                    factors[f"{layer}.{name}.lora_a"] = m.lora_a
                    factors[f"{layer}.{name}.lora_b"] = m.lora_b
        return Adapter(self.layer_ids, self.rank, self.scale, factors)

    def compatible(self, adapter: Adapter) -> bool:
        return (adapter.layers == self.layer_ids and adapter.rank == self.rank
                and adapter.scale == self.scale)

    def load_adapter(self, adapter: Adapter) -> None:
        for layer, name, a, b in adapter.pairs():
            m = _module(self.layers[self.layer_ids.index(layer)], name)
            m.lora_a, m.lora_b = a, b


def _module(root: nn.Module, dotted: str) -> nn.Module:
    m = root
    for part in dotted.split("."):
        m = m[int(part)] if isinstance(m, list) else m[part]
    return m


class AppliedAdapter:
    """An adapter in use by a draft model; `remove()` restores the draft bit for bit."""

    def __init__(self, model, adapter: Adapter, fuse: bool = True):
        self.model, self.adapter = model, adapter
        self.undo: list[tuple[nn.Module, str, object]] = []  # (block, name, original)
        self.fused = 0
        for layer, name, a, b in adapter.pairs():
            block = model.layers[layer]
            lin = _module(block, name)
            if fuse and type(lin) is nn.Linear:
                delta = (adapter.scale * (a @ b).T).astype(lin.weight.dtype)
                self.undo.append((lin, "weight", lin.weight))
                lin.weight = lin.weight + delta
                self.fused += 1
            else:
                lora = LoRALinear.from_base(lin, r=adapter.rank, scale=adapter.scale)
                lora.lora_a, lora.lora_b = a, b
                block.update_modules(tree_unflatten([(name, lora)]))
                self.undo.append((block, name, lin))
        mx.eval(model.parameters())

    def remove(self) -> None:
        for owner, name, original in reversed(self.undo):
            if name == "weight":
                owner.weight = original
            else:
                owner.update_modules(tree_unflatten([(name, original)]))
        self.undo = []
