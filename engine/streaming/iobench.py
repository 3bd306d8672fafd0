"""Layer-read micro-benchmark: `python -m engine.streaming.iobench [--mb 256] [--dir /tmp]`.

Writes a synthetic safetensors "model" (layers of fp32 tensors), then reads it layer by layer
with three readers, cold (page cache dropped after every layer, as streaming does) and warm:
- canopy: `engine.streaming.weights.read_tensors` (coalesced reads straight into one MLX buffer),
- numpy+copy: read into a numpy buffer, then `mx.array(...)` per tensor (one more copy),
- mx.load: MLX's own lazy loader, evaluating one layer's arrays.
Also measures fixed costs per layer: a read of nine tiny tensors, and a streamed 1-token pass
of a tiny model against the resident one (page cache warm, so only the machinery is timed).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import mlx.core as mx
import numpy as np

from .weights import build_index, drop_page_cache, plan_reads, read_tensors

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
            f.seek(run.offset)
            f.readinto(memoryview(buf))
            if bypass:
                os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
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


def bandwidth(path: Path, reader, bypass: bool) -> float:
    """GB/s over one pass of all layers (cold: the file is evicted first and after each layer)."""
    index = build_index([path])
    if bypass:
        drop_page_cache(path)
    else:
        for g in index.layers:  # warm the page cache
            reader(g, False)
    t0 = time.perf_counter()
    for g in index.layers:
        reader(g, bypass)
    return index.nbytes / (time.perf_counter() - t0) / 1e9


def per_layer_overhead(tmp: Path, n: int = 200) -> float:
    """Seconds per layer read for a layer of tiny tensors (fixed costs only)."""
    path = make_file(tmp / "tiny.safetensors", 1, 8, sorted_layout=True)
    group = build_index([path]).layers[0]
    read_tensors(group, bypass_cache=False)
    t0 = time.perf_counter()
    for _ in range(n):
        read_tensors(group, bypass_cache=False)
    return (time.perf_counter() - t0) / n


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mb", type=int, default=256)
    p.add_argument("--layers", type=int, default=16)
    p.add_argument("--dir", default="/tmp")
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args(argv)
    tmp = Path(args.dir) / "canopy-iobench"
    tmp.mkdir(exist_ok=True)
    try:
        for layout in ("sorted", "mlx"):
            path = tmp / f"{layout}.safetensors"
            make_file(path, args.mb, args.layers, sorted_layout=layout == "sorted")
            runs = sum(len(plan_reads(g)) for g in build_index([path]).layers) / args.layers
            print(f"{layout} layout, {args.mb} MB, {args.layers} layers, {runs:.0f} reads/layer")
            results: dict[tuple[str, bool], list[float]] = {}
            for _ in range(args.repeat):  # interleaved, so drift in a shared machine hits all
                for name, reader in READERS.items():
                    for bypass in (True, False):
                        results.setdefault((name, bypass), []).append(
                            bandwidth(path, reader, bypass))
            for (name, bypass), r in results.items():
                print(f"  {name:11s} {'cold' if bypass else 'warm'}: "
                      f"{np.median(r):5.2f} GB/s (min {min(r):.2f}, max {max(r):.2f})")
        print(f"read_tensors fixed cost per layer (9 tiny tensors, warm): "
              f"{per_layer_overhead(tmp) * 1e6:.0f} us")
        resident, streamed = streamed_overhead(tmp)
        print(f"1-token pass per layer, tiny model: resident {resident * 1e6:.0f} us, streamed "
              f"{streamed * 1e6:.0f} us (overhead {(streamed - resident) * 1e6:.0f} us/layer)")
    finally:
        for f in tmp.glob("*.safetensors"):
            f.unlink()
        tmp.rmdir()


if __name__ == "__main__":
    main()
