"""Layer-read micro-benchmark (`canopy bench --io`): returns figures, never prints.

Writes a synthetic safetensors "model" (layers of fp32 tensors), then reads it layer by layer
with three readers, cold and warm (`cold_read_kind` says what "cold" is on this OS: on Linux the
page cache is dropped before and after every layer, as streaming does; macOS cannot evict
cached pages (F_NOCACHE only stops new ones being cached), so there each cold pass reads a fresh
copy of the file, written through an uncached descriptor and not read before by this process):
- canopy: `engine.streaming.weights.read_tensors` (coalesced reads straight into one MLX buffer),
- numpy+copy: read into a numpy buffer, then `mx.array(...)` per tensor (one more copy),
- mx.load: MLX's own lazy loader, evaluating one layer's arrays.
Also measures fixed costs per layer: a read of nine tiny tensors, and a streamed 1-token pass
of a tiny model against the resident one (page cache warm, so only the machinery is timed).
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import mlx.core as mx
import numpy as np

from ..config import IOBENCH_LAYERS, IOBENCH_MB, IOBENCH_REPEAT
from .weights import (
    build_index,
    drop_page_cache,
    evict_fd,
    page_cache_evictable,
    plan_reads,
    read_tensors,
    set_uncached,
)

NAMES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "n1", "n2")


def make_file(path: Path, total_mb: int, layers: int, sorted_layout: bool) -> Path:
    """fp32 tensors, nine per layer; sorted (safetensors lib) or MLX's unordered layout."""
    per = total_mb * 2**20 // layers // 4 // len(NAMES)
    rng = np.random.default_rng(0)
    arrays = {f"model.layers.{i}.{n}.weight": rng.standard_normal(per, dtype=np.float32)
              for i in range(layers) for n in NAMES}
    if sorted_layout:
        from safetensors.numpy import save_file

        save_file(arrays, str(path))
    else:
        mx.save_safetensors(str(path), {k: mx.array(v) for k, v in arrays.items()})
    return path


def _numpy_copy(group, bypass: bool):
    out = {}
    for run in plan_reads(group):
        buf = np.empty(run.length, np.uint8)
        with open(run.file, "rb", buffering=0) as f:
            if bypass:
                set_uncached(f.fileno())
            f.seek(run.offset)
            f.readinto(memoryview(buf))
            if bypass:
                evict_fd(f.fileno())
        for t in run.tensors:
            a = t.offset - run.offset
            out[t.name] = mx.array(np.frombuffer(buf, np.float32, t.length // 4, a))
        del buf
    mx.eval(list(out.values()))
    return out


def _mx_load(group, bypass: bool):
    arrays = mx.load(str(group[0].file))
    out = {t.name: arrays[t.name] for t in group}
    mx.eval(list(out.values()))
    if bypass:
        drop_page_cache(group[0].file)
    return out


READERS = {
    "canopy": lambda g, bypass: read_tensors(g, bypass_cache=bypass),
    "numpy+copy": _numpy_copy,
    "mx.load": _mx_load,
}


def streamed_overhead(tmp: Path, layers: int = 8, n: int = 30) -> tuple[float, float]:
    """(resident, streamed) seconds per layer of a 1-token pass, tiny layers, page cache warm."""
    from ..formats.loader import load_model
    from ..testing import make_tiny_model
    from .streamed_model import load_streamed_model

    d = make_tiny_model(tmp / "tiny-model", num_layers=layers)
    index = build_index(sorted(d.glob("*.safetensors")))
    base = sum(t.length for t in index.other)
    models = [load_model(d).model,
              load_streamed_model(d, base + 2 * index.layer_bytes(0), bypass_cache=False).model]
    x = mx.array([[1]])
    out = []
    for m in models:
        mx.eval(m(x))
        t0 = time.perf_counter()
        for _ in range(n):
            mx.eval(m(x))
        out.append((time.perf_counter() - t0) / n / layers)
    models[1].close()
    for f in d.iterdir():
        f.unlink()
    d.rmdir()
    return out[0], out[1]


def cold_read_kind() -> str:
    """What a "cold" figure measures on this OS: "evicted" (page cache dropped, Linux) or
    "fresh-file" (a copy this process wrote uncached and never read, macOS)."""
    return "evicted" if page_cache_evictable() else "fresh-file"


def fresh_copy(path: Path, out: Path) -> Path:
    """A copy of `path` written through an uncached descriptor (macOS: its pages are not kept
    in the page cache), for a cold read where the cache cannot be dropped."""
    with open(path, "rb") as src, open(out, "wb", buffering=0) as dst:
        set_uncached(dst.fileno())
        shutil.copyfileobj(src, dst, 8 * 2**20)
        os.fsync(dst.fileno())
    return out


def bandwidth(path: Path, reader, bypass: bool) -> float:
    """GB/s over one pass of all layers (cold: see `cold_read_kind`; warm: cached first)."""
    fresh = None
    if bypass and not drop_page_cache(path):
        path = fresh = fresh_copy(path, path.with_suffix(".fresh.safetensors"))
    index = build_index([path])
    if not bypass:
        for g in index.layers:  # warm the page cache
            reader(g, False)
    try:
        t0 = time.perf_counter()
        for g in index.layers:
            reader(g, bypass)
        return index.nbytes / (time.perf_counter() - t0) / 1e9
    finally:
        if fresh is not None:
            fresh.unlink()


def per_layer_overhead(tmp: Path, n: int = 200) -> float:
    """Seconds per layer read for a layer of tiny tensors (fixed costs only)."""
    path = make_file(tmp / "tiny.safetensors", 1, 8, sorted_layout=True)
    group = build_index([path]).layers[0]
    read_tensors(group, bypass_cache=False)
    t0 = time.perf_counter()
    for _ in range(n):
        read_tensors(group, bypass_cache=False)
    return (time.perf_counter() - t0) / n


def run_iobench(tmp: Path, mb: int = IOBENCH_MB, layers: int = IOBENCH_LAYERS,
                repeat: int = IOBENCH_REPEAT) -> dict:
    """Every figure of the benchmark (files written under `tmp`, removed afterwards).

    Returns {"cold_read_kind", "layouts": {layout: {"reads_per_layer", "gbps": {reader:
    {"cold"|"warm": [GB/s per repeat]}}}}, "read_fixed_seconds_per_layer",
    "pass_seconds_per_layer": {"resident", "streamed"}}.
    """
    tmp.mkdir(parents=True, exist_ok=True)
    out: dict = {"cold_read_kind": cold_read_kind(), "mb": mb, "layers": layers, "layouts": {}}
    try:
        for layout in ("sorted", "mlx"):
            path = tmp / f"{layout}.safetensors"
            make_file(path, mb, layers, sorted_layout=layout == "sorted")
            runs = sum(len(plan_reads(g)) for g in build_index([path]).layers) / layers
            gbps: dict[str, dict[str, list[float]]] = {}
            for _ in range(repeat):  # interleaved, so drift in a shared machine hits all
                for name, reader in READERS.items():
                    for bypass in (True, False):
                        gbps.setdefault(name, {}).setdefault(
                            "cold" if bypass else "warm", []).append(
                            bandwidth(path, reader, bypass))
            out["layouts"][layout] = {"reads_per_layer": runs, "gbps": gbps}
        out["read_fixed_seconds_per_layer"] = per_layer_overhead(tmp)
        resident, streamed = streamed_overhead(tmp)
        out["pass_seconds_per_layer"] = {"resident": resident, "streamed": streamed}
    finally:
        for f in tmp.glob("*.safetensors"):
            f.unlink()
    return out
