"""Safetensors header index and layer reads that go around the OS page cache.

The index maps every tensor to (file, absolute byte offset, length, dtype, shape) and groups the
tensors by transformer layer (`...layers.N...`). Reading a group plans the fewest large reads the
file layout allows (contiguous tensors of one file are coalesced into one run), reads each run
straight into one MLX uint8 buffer through its writable buffer protocol (no second copy), and
makes every tensor a zero-copy view of that buffer. Quantized weights (uint32 packs + scales +
biases) are read as they are stored.

Reads must happen on the thread that will `mx.eval` the result (MLX streams are per thread);
`read_tensors` evaluates before returning, so its arrays can be shared with any thread.
"""

from __future__ import annotations

import json
import os
import re
import struct
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from math import prod
from pathlib import Path

import mlx.core as mx
import numpy as np

from ..errors import StreamingError

DTYPES: dict[str, tuple[mx.Dtype, int]] = {
    "F64": (mx.float64, 8),
    "F32": (mx.float32, 4),
    "F16": (mx.float16, 2),
    "BF16": (mx.bfloat16, 2),
    "I64": (mx.int64, 8),
    "I32": (mx.int32, 4),
    "I16": (mx.int16, 2),
    "I8": (mx.int8, 1),
    "U64": (mx.uint64, 8),
    "U32": (mx.uint32, 4),
    "U16": (mx.uint16, 2),
    "U8": (mx.uint8, 1),
    "BOOL": (mx.bool_, 1),
}
MAX_HEADER = 100 * 1024 * 1024  # the safetensors spec's own limit
ALIGN = 64  # byte alignment of each run inside a layer's buffer
CHUNK = 32 * 1024 * 1024  # read in chunks so a stop request is honoured within one chunk
F_NOCACHE: int | None = None  # macOS: fcntl.F_NOCACHE, absent from some Pythons' fcntl
if sys.platform == "darwin":
    import fcntl

    F_NOCACHE = getattr(fcntl, "F_NOCACHE", 48)
_LAYER = re.compile(r"(?:^|\.)layers\.(\d+)\.")


class ReadCancelled(Exception):
    """`should_stop()` became true during a read."""


@dataclass(frozen=True)
class TensorInfo:
    name: str
    file: Path
    offset: int  # absolute byte offset in `file`
    length: int  # bytes
    dtype: str  # safetensors code, e.g. "BF16"
    shape: tuple[int, ...]


@dataclass(frozen=True)
class ReadRun:
    """One contiguous byte range of one file holding `tensors` back to back."""

    file: Path
    offset: int
    length: int
    tensors: tuple[TensorInfo, ...]


@dataclass(frozen=True)
class FileStamp:
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class WeightIndex:
    tensors: dict[str, TensorInfo]
    layers: tuple[tuple[TensorInfo, ...], ...]  # by layer number; empty tuple for a gap
    other: tuple[TensorInfo, ...]  # embeddings, final norm, head, ...
    stamps: dict[Path, FileStamp]  # what each file looked like when indexed

    def layer_bytes(self, i: int) -> int:
        return sum(t.length for t in self.layers[i])

    @property
    def nbytes(self) -> int:
        return sum(t.length for t in self.tensors.values())


def layer_of(name: str) -> int | None:
    """The transformer layer a tensor belongs to (`model.layers.7.mlp...` -> 7), or None."""
    m = _LAYER.search(name)
    return int(m.group(1)) if m else None


def read_header(path: Path) -> tuple[dict, int, FileStamp]:
    """The parsed JSON header of a safetensors file, the offset where its data starts, its stamp."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            head = f.read(8)
            if len(head) < 8:
                raise StreamingError(f"{path} is too short to be a safetensors file (truncated?).")
            (n,) = struct.unpack("<Q", head)
            if n > min(MAX_HEADER, st.st_size - 8):
                raise StreamingError(
                    f"{path} has a corrupt safetensors header (declared length {n} bytes, file "
                    f"size {st.st_size}). Re-download or re-convert the model."
                )
            raw = f.read(n)
    except OSError as e:
        raise StreamingError(f"Cannot read {path}: {e.strerror or e}.") from e
    try:
        header = json.loads(raw)
        if not isinstance(header, dict):
            raise ValueError("not a JSON object")
    except (ValueError, UnicodeDecodeError) as e:
        raise StreamingError(
            f"{path} has a corrupt safetensors header ({e}). Re-download or re-convert the model."
        ) from e
    return header, 8 + n, FileStamp(st.st_size, st.st_mtime_ns)


def _tensor_infos(path: Path, header: dict, start: int, size: int) -> list[TensorInfo]:
    infos = []
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (a, b) = meta["dtype"], tuple(int(s) for s in meta["shape"]), meta[
                "data_offsets"]
            itemsize = DTYPES[dtype][1]
            ok = 0 <= a <= b and start + b <= size and b - a == prod(shape) * itemsize
        except (KeyError, TypeError, ValueError):
            ok = False
        if not ok:
            raise StreamingError(
                f"{path} has a corrupt safetensors header: entry {name!r} ({meta}) is invalid or "
                "points outside the file. Re-download or re-convert the model."
            )
        infos.append(TensorInfo(name, path, start + a, b - a, dtype, shape))
    return infos


def build_index(files: Iterable[Path], weight_map: dict[str, str] | None = None) -> WeightIndex:
    """Index the tensors of `files`; `weight_map` (from index.json) is checked when given."""
    tensors: dict[str, TensorInfo] = {}
    stamps: dict[Path, FileStamp] = {}
    for f in files:
        f = Path(f)
        header, start, stamp = read_header(f)
        stamps[f] = stamp
        for t in _tensor_infos(f, header, start, stamp.size):
            if t.name in tensors:
                raise StreamingError(f"Tensor {t.name} is in both {tensors[t.name].file} and {f}.")
            tensors[t.name] = t
    for name, fname in (weight_map or {}).items():
        if name not in tensors or tensors[name].file.name != Path(fname).name:
            raise StreamingError(
                f"The shard index says {name} is in {fname}, but that file's header does not "
                "list it. The model folder is inconsistent; re-download it."
            )
    by_layer: dict[int, list[TensorInfo]] = {}
    other = []
    for t in tensors.values():
        i = layer_of(t.name)
        (other if i is None else by_layer.setdefault(i, [])).append(t)
    n = max(by_layer, default=-1) + 1
    layers = tuple(tuple(sorted(by_layer.get(i, []), key=_order)) for i in range(n))
    return WeightIndex(tensors, layers, tuple(sorted(other, key=_order)), stamps)


def index_model(path: Path) -> WeightIndex:
    """Index a model folder (single file or sharded with model.safetensors.index.json)."""
    from ..formats.loader import weight_files

    path = Path(path)
    files = weight_files(path)  # raises ModelError for a missing file or a corrupt index.json
    index_file = path / "model.safetensors.index.json"
    weight_map = None
    if index_file.exists():
        weight_map = json.loads(index_file.read_text())["weight_map"]
    return build_index(files, weight_map)


def _order(t: TensorInfo) -> tuple[str, int]:
    return (str(t.file), t.offset)


def plan_reads(tensors: Iterable[TensorInfo]) -> list[ReadRun]:
    """Coalesce tensors that sit back to back in one file into single reads, in file order."""
    runs: list[ReadRun] = []
    for t in sorted(tensors, key=_order):
        last = runs[-1] if runs else None
        if last is not None and last.file == t.file and last.offset + last.length == t.offset:
            runs[-1] = ReadRun(last.file, last.offset, last.length + t.length, (*last.tensors, t))
        else:
            runs.append(ReadRun(t.file, t.offset, t.length, (t,)))
    return runs


def _open(path: Path, stamp: FileStamp | None, bypass_cache: bool) -> int:
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError as e:
        raise StreamingError(f"Weight file {path} has vanished (it was deleted or moved).") from e
    except OSError as e:
        raise StreamingError(f"Cannot open weight file {path}: {e.strerror or e}.") from e
    try:
        st = os.fstat(fd)
        if stamp is not None and (st.st_size, st.st_mtime_ns) != (stamp.size, stamp.mtime_ns):
            raise StreamingError(
                f"Weight file {path} changed on disk since the model was loaded (size "
                f"{stamp.size} -> {st.st_size} bytes). Reload the model."
            )
        if bypass_cache:
            set_uncached(fd)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _pread_into(fd: int, view: memoryview, offset: int) -> int:
    if hasattr(os, "preadv"):
        return os.preadv(fd, [view], offset)
    os.lseek(fd, offset, os.SEEK_SET)
    return os.readv(fd, [view])


def _read_exact(fd: int, view: memoryview, offset: int, path: Path, should_stop) -> None:
    done, total = 0, len(view)
    while done < total:
        if should_stop is not None and should_stop():
            raise ReadCancelled()
        try:
            n = _pread_into(fd, view[done : min(total, done + CHUNK)], offset + done)
        except OSError as e:
            raise StreamingError(f"Reading weight file {path} failed: {e.strerror or e}.") from e
        if n == 0:
            raise StreamingError(
                f"Short read from weight file {path}: got {done} of {total} bytes at offset "
                f"{offset} (the file was truncated?). Reload or re-download the model."
            )
        done += n


def _view(buf: mx.array, rel: int, t: TensorInfo) -> mx.array:
    dtype, itemsize = DTYPES[t.dtype]
    if t.length == 0:
        return mx.zeros(t.shape, dtype)
    raw = buf[rel : rel + t.length]
    if rel % itemsize:  # misaligned for its dtype: give it its own aligned buffer
        raw = mx.array(np.frombuffer(memoryview(buf)[rel : rel + t.length], np.uint8))
    return raw.view(dtype).reshape(t.shape)


def read_tensors(
    tensors: Iterable[TensorInfo] | list[ReadRun],
    *,
    stamps: dict[Path, FileStamp] | None = None,
    bypass_cache: bool = True,
    should_stop: Callable[[], bool] | None = None,
) -> dict[str, mx.array]:
    """Read tensors (or pre-planned runs) into evaluated MLX arrays, keyed by tensor name.

    Raises StreamingError naming the file on any IO problem (vanished, changed size, short
    read), ReadCancelled when `should_stop()` turns true.
    """
    items = list(tensors)
    runs = items if items and isinstance(items[0], ReadRun) else plan_reads(items)
    out: dict[str, mx.array] = {}
    by_file: dict[Path, list[ReadRun]] = {}
    for r in runs:
        by_file.setdefault(r.file, []).append(r)
    for path, file_runs in by_file.items():
        fd = _open(path, (stamps or {}).get(path), bypass_cache)
        try:
            if hasattr(os, "posix_fadvise"):  # queue the whole layer: the disk works ahead of us
                for run in file_runs:
                    os.posix_fadvise(fd, run.offset, run.length, os.POSIX_FADV_WILLNEED)
            # One buffer per file and call, not per run: every layer then asks MLX's allocator
            # for the same size, so its cache reuses freed layers instead of hoarding run sizes.
            starts, total = [], 0
            for run in file_runs:
                starts.append(total)
                total += -(-run.length // ALIGN) * ALIGN
            buf = mx.zeros((total,), mx.uint8)
            mx.eval(buf)
            view = memoryview(buf)
            for run, start in zip(file_runs, starts, strict=True):
                _read_exact(fd, view[start : start + run.length], run.offset, path, should_stop)
                for t in run.tensors:
                    out[t.name] = _view(buf, start + t.offset - run.offset, t)
            del view
        finally:
            if bypass_cache:
                evict_fd(fd)
            os.close(fd)
    mx.eval(list(out.values()))
    return out


def page_cache_evictable() -> bool:
    """Can this OS drop a file's pages from its cache (posix_fadvise, Linux)? macOS cannot:
    F_NOCACHE only stops *new* pages being cached; pages already cached are served from RAM."""
    return hasattr(os, "posix_fadvise")


def set_uncached(fd: int) -> None:
    """macOS: reads through `fd` do not fill the page cache (F_NOCACHE); elsewhere a no-op."""
    if F_NOCACHE is not None:
        fcntl.fcntl(fd, F_NOCACHE, 1)


def evict_fd(fd: int) -> bool:
    """Drop the file behind `fd` from the page cache where the OS can (True if it did)."""
    if not page_cache_evictable():
        return False
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    except OSError:
        return False
    return True


def drop_page_cache(path: Path) -> bool:
    """Evict `path` from the OS page cache (Linux; elsewhere a no-op returning False)."""
    if not page_cache_evictable():
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        return evict_fd(fd)
    finally:
        os.close(fd)
