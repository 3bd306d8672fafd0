"""A target larger than memory: transformer layers streamed under a hard byte budget.

Embeddings, final norm and LM head stay resident; as many layers as fit are pinned; the rest
are read every pass, in layer order, by one background IO thread that runs ahead of compute
(cyclically, into the next pass) through a bounded queue. A layer's bytes count against the
budget from the moment its read starts until compute releases it; the IO thread waits when the
next read would cross the budget. The IO thread evaluates what it reads (MLX streams are per
thread); compute only ever sees evaluated arrays.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten

from ..config import DEFAULT_PREFETCH, DEFAULT_READ_TIMEOUT, STREAM_CACHE_LAYERS
from ..costmodel.rules import WaitFacts
from ..formats.loader import LoadedModel, build_shell, load_tokenizer, read_config
from ..models.cache import cache_state
from .layerstore import IOStats, LayerStore, plan_pinned
from .memory import cap_buffer_cache, release_buffer_cache_cap
from .weights import WeightIndex, index_model, read_tensors

__all__ = ["IOStats", "LayerStore", "StreamedModel", "StreamedLoadedModel", "load_streamed_model"]


class StreamedModel:
    """Callable like the resident `Model`, with layers streamed through a `LayerStore`."""

    def __init__(self, shell: nn.Module, pinned: list[int], store: LayerStore, prefix: str):
        self.shell, self.store = shell, store
        self.args = shell.args
        self.pinned = frozenset(pinned)
        self._prefix = prefix  # e.g. "model.layers."; a layer's tensors are prefix + "i."
        self.release_cache_cap = lambda: None  # ends this model's cap on MLX's buffer cache
        self._empty = mx.zeros((0,))
        mx.eval(self._empty)
        # Per streamed layer: (parent module, key, tensor name) of every parameter, so swapping
        # weights in and out is a handful of dict stores.
        self._slots = {i: [(*_slot(shell.layers[i], k), f"{prefix}{i}.{k}")
                           for k, _ in tree_flatten(shell.layers[i].parameters())]
                       for i in store.streamed}
        for i in store.streamed:
            self._fill(i, None)  # drops the never-evaluated random init

    def _fill(self, i: int, weights: dict | None) -> None:
        for parent, key, name in self._slots[i]:
            parent[key] = self._empty if weights is None else weights[name]

    @property
    def layers(self) -> list[nn.Module]:
        return self.shell.layers

    def __call__(self, tokens, cache=None, positions=None, mask=None,
                 while_waiting: Callable[[WaitFacts], bool] | None = None):
        """Logits (1, L, vocab); `while_waiting(facts)` may run draft work while a layer is
        read (engine.streaming.layerstore.LayerStore.take)."""
        if mask is None and tokens.shape[1] > 1:
            mask = "causal"
        if self.store.streamed:
            self.store.start()
        h = self.shell.embed(tokens)
        caches = cache if cache is not None else [None] * len(self.layers)
        for i, (layer, c) in enumerate(zip(self.layers, caches, strict=True)):
            if i in self.pinned:
                h = layer(h, mask, c, positions)
                continue
            mx.eval(h)  # finish pending (pinned) work before maybe waiting
            weights = self.store.take(i, while_waiting)
            try:
                self._fill(i, weights)
                del weights
                h = layer(h, mask, c, positions)
                mx.eval(h, cache_state([c]) if c is not None else [])
            finally:
                self._fill(i, None)
                self.store.release(i)
        self.store.count_pass()
        return self.shell.head(h)

    def embed(self, tokens):
        return self.shell.embed(tokens)

    def head(self, h):
        return self.shell.head(h)

    def io_stats(self) -> IOStats:
        return self.store.snapshot(len(self.pinned))

    def reset_peak(self) -> None:
        self.store.reset_peak()

    def layer_states(self) -> tuple[str, ...]:
        streamed = self.store.states()
        return tuple("pinned" if i in self.pinned else streamed[i] for i in range(len(self.layers)))

    def stop(self) -> None:
        """Stop the IO thread (cancel); the next call starts it again."""
        self.store.stop()

    def close(self) -> None:
        self.store.close()
        self.release_cache_cap()  # runs once (weakref.finalize)


def _slot(module: nn.Module, path: str):
    """(parent, key) holding the parameter at dotted `path` ("mlp.up_proj.weight")."""
    *parents, key = path.split(".")
    for p in parents:
        module = module[int(p)] if isinstance(module, list) else module[p]
    return module, key


class StreamedLoadedModel(LoadedModel):
    def nbytes(self) -> int:
        return self.model.store.index.nbytes  # the whole model on disk (not just resident)

    def close(self) -> None:
        self.model.close()


def load_streamed_model(
    path: str | Path,
    budget_bytes: int,
    *,
    prefetch: int = DEFAULT_PREFETCH,
    bypass_cache: bool = True,
    reader: Callable[..., dict[str, mx.array]] = read_tensors,
    read_timeout: float = DEFAULT_READ_TIMEOUT,
) -> StreamedLoadedModel:
    """Load a target whose weight bytes resident never exceed `budget_bytes`.

    Args:
        prefetch: layers the IO thread may hold ready ahead of compute.
        bypass_cache: evict what is read from the OS page cache (so passes really read storage).
        reader: the layer reader (tests inject faults here).
        read_timeout: seconds a layer read may take before the pass fails (stuck storage).
    """
    path = Path(path).expanduser()
    config = read_config(path)
    tokenizer = load_tokenizer(path)
    index = index_model(path)
    # the same shell, quantization and shape check as a resident load; random init stays lazy
    shell, names, expected = build_shell(config, index.tensors, path)
    n = len(shell.layers)
    prefix = [f"{name.rsplit('layers.', 1)[0]}layers." for name in expected if ".layers." in name]
    lp = prefix[0] if prefix else "model.layers."
    layer_names = [[k for k in expected if k.startswith(f"{lp}{i}.")] for i in range(n)]
    in_layers = {k for names_i in layer_names for k in names_i}
    base = [names[k] for k in expected if k not in in_layers]
    layer_bytes = [sum(names[k].length for k in ks) for ks in layer_names]
    base_bytes = sum(t.length for t in base)
    pinned = plan_pinned(base_bytes, layer_bytes, budget_bytes, prefetch)
    resident = base + [names[k] for i in pinned for k in layer_names[i]]
    shell.load_weights(list(read_tensors(resident, stamps=index.stamps,
                                         bypass_cache=bypass_cache).items()), strict=False)
    streamed = [i for i in range(n) if i not in set(pinned)]
    cache_cap = cap_buffer_cache(STREAM_CACHE_LAYERS * max(layer_bytes)) if streamed else None
    # Layers are read by name from the index: keep exactly the expected tensors per layer.
    sub = WeightIndex(index.tensors, tuple(tuple(names[k] for k in ks) for ks in layer_names),
                      index.other, index.stamps)
    store = LayerStore(sub, streamed, base_bytes + sum(layer_bytes[i] for i in pinned),
                       budget_bytes, prefetch, bypass_cache, reader,
                       read_timeout=read_timeout)
    model = StreamedModel(shell, pinned, store, lp)
    if cache_cap is not None:  # released by close(), or when the model is collected unclosed
        model.release_cache_cap = weakref.finalize(model, release_buffer_cache_cap, cache_cap)
    store.start()
    return StreamedLoadedModel(path=path, config=config, model=model, tokenizer=tokenizer)
