"""Writing a model folder: weights in shards, built in a staging folder, published by rename."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import mlx.core as mx

from ..errors import ModelError
from ..events import LoadProgress

SHARD_BYTES = 2 << 30

Progress = Callable[[LoadProgress], None] | None


def save_model_dir(out: Path, arrays: dict, progress: Progress = None,
                   what: str = "writing weights") -> None:
    """Write `arrays` (in order) as model.safetensors, or shards of <= SHARD_BYTES + an index.

    Values are MLX arrays or objects with `shape`, `nbytes` and `load()` (computed when their
    shard is written). Consumes `arrays`: each shard's entries are set to None once written, so
    a model larger than memory is converted one shard at a time.
    """
    shards: list[list[str]] = [[]]
    size = 0
    for name, arr in arrays.items():
        if shards[-1] and size + arr.nbytes > SHARD_BYTES:
            shards.append([])
            size = 0
        shards[-1].append(name)
        size += arr.nbytes
    total, done = len(arrays), 0
    weight_map = {}
    for i, names in enumerate(shards):
        fname = ("model.safetensors" if len(shards) == 1
                 else f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors")
        for name in names:
            if not isinstance(arrays[name], mx.array):
                arrays[name] = arrays[name].load()
            mx.eval(arrays[name])
            done += 1
            if progress:
                progress(LoadProgress(what, done, total))
        mx.save_safetensors(str(out / fname), {n: arrays[n] for n in names},
                            metadata={"format": "mlx"})
        weight_map.update({n: fname for n in names})
        for name in names:  # free this shard before computing the next
            arrays[name] = None
        mx.clear_cache()
    if len(shards) > 1:
        index = {"metadata": {}, "weight_map": weight_map}
        (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=1))


def write_failure(out_dir: Path, exc: BaseException) -> ModelError:
    """A failed write of a model folder (disk full, read-only, quota) as one clear error."""
    try:
        free = f"{shutil.disk_usage(out_dir.parent).free / 2**20:.0f} MB free there"
    except OSError:
        free = "free space unknown"
    if isinstance(exc, OSError):
        reason = exc.strerror or str(exc)
    else:  # MLX's writer raises RuntimeError("[write] Unable to write N bytes to file.")
        reason = f"{str(exc).removeprefix('[write] ')} (is the disk full?)"
    return ModelError(f"Writing the model to {out_dir} failed: {reason}; {free}. Nothing was "
                      "kept; free some disk space (or choose another folder) and try again.")


def staging_dir(out_dir: Path) -> Path:
    """A fresh sibling folder to build `out_dir` in; rename it into place when complete."""
    tmp = out_dir.parent / f".{out_dir.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
    except OSError as e:
        raise write_failure(out_dir, e) from e
    return tmp


def publish(tmp: Path, out_dir: Path) -> None:
    """Replace `out_dir` by the completed `tmp` folder."""
    if out_dir.exists():
        old = out_dir.parent / f".{out_dir.name}.old-{os.getpid()}"
        out_dir.rename(old)
        tmp.rename(out_dir)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(out_dir)


@contextmanager
def staged(out_dir: Path) -> Iterator[Path]:
    """Build `out_dir` in a staging folder (yielded) and publish it by rename when the block
    ends; on failure nothing is kept, and a failed write (disk full, read-only) becomes one
    ModelError naming the folder and the free space."""
    tmp = staging_dir(out_dir)
    try:
        yield tmp
        publish(tmp, out_dir)
    except (OSError, RuntimeError) as e:  # MLX's writer raises RuntimeError
        shutil.rmtree(tmp, ignore_errors=True)
        raise write_failure(out_dir, e) from e
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
