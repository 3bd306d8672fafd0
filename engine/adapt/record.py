"""Record the target's distributions at verified positions into a bounded on-disk buffer.

The target computes its logits at every tree node anyway; at the nodes of the accepted path they
are the teacher signal for distilling the draft (OSD). One generation becomes one `Sequence`:
its token ids once, and per recorded position the target's top-k token ids and log-probabilities
(log-softmax over the whole vocabulary, so the kept mass is known). A position is "rejected"
when the draft proposed children there and the target took none of them.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import mlx.core as mx
import numpy as np
from safetensors.numpy import load_file, save_file

from ..errors import CanopyError

INDEX = "index.json"


@dataclass(frozen=True)
class Sequence:
    """One recorded generation.

    ids: (T,) prompt + generated tokens. positions: (n,) indices into ids; the target's
    distribution at position p is over the token that follows ids[:p + 1].
    topk_ids / topk_logprobs: (n, k). rejected: (n,) bool.
    """

    ids: np.ndarray
    positions: np.ndarray
    topk_ids: np.ndarray
    topk_logprobs: np.ndarray
    rejected: np.ndarray

    def __len__(self) -> int:
        return len(self.positions)


class Recorder:
    """The decode loop's observer: keeps the target's top-k at each accepted-path node.

    Pass it as `observer` to `generate`; `sequence()` afterwards returns what was recorded.
    """

    def __init__(self, prompt_ids: list[int], top_k: int):
        self.ids = list(prompt_ids)  # ends with the root of the next step
        self.top_k = top_k
        self.positions: list[int] = []
        self.rejected: list[bool] = []
        self.rows: list[tuple[mx.array, mx.array]] = []
        self.seconds = 0.0

    def __call__(self, tree, path, bonus, logits) -> None:
        start = time.perf_counter()
        rows = logits[mx.array(path)].astype(mx.float32)  # (len(path), vocab)
        k = min(self.top_k, rows.shape[-1])
        idx = mx.argpartition(-rows, kth=k - 1, axis=-1)[:, :k]
        logp = mx.take_along_axis(rows, idx, axis=-1) - mx.logsumexp(rows, axis=-1, keepdims=True)
        mx.eval(idx, logp)  # inside the timer: `seconds` is the whole cost of recording
        self.rows.append((idx, logp))
        base = len(self.ids) - 1  # position of the root
        self.positions.extend(range(base, base + len(path)))
        last = path[-1]
        self.rejected.extend([False] * (len(path) - 1) + [last in tree.parents])
        self.ids.extend([tree.tokens[n] for n in path[1:]] + [bonus])
        self.seconds += time.perf_counter() - start

    def sequence(self) -> Sequence | None:
        """What was recorded (None if nothing); the ids end with the last committed token."""
        if not self.positions:
            return None
        idx = np.concatenate([np.array(i, dtype=np.int32) for i, _ in self.rows])
        logp = np.concatenate([np.array(lp, dtype=np.float16) for _, lp in self.rows])
        return Sequence(
            ids=np.array(self.ids, dtype=np.int32),
            positions=np.array(self.positions, dtype=np.int32),
            topk_ids=idx,
            topk_logprobs=logp,
            rejected=np.array(self.rejected, dtype=np.uint8).astype(bool),
        )


class Buffer:
    """Recorded sequences of one (target, draft) pair: a folder of safetensors shards + an index.

    Bounded by `cap_bytes`: adding past the cap drops the oldest shards. Local only.
    """

    def __init__(self, folder: str | Path, cap_bytes: int):
        self.folder = Path(folder)
        self.cap_bytes = cap_bytes
        self.index = self._read_index()

    def _read_index(self) -> dict:
        path = self.folder / INDEX
        if not path.exists():
            return {"version": 1, "next": 1, "shards": []}
        try:
            index = json.loads(path.read_text())
            index["shards"]  # noqa: B018 - a missing key means a corrupt index
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise CanopyError(
                f"The adaptation buffer index {path} is corrupt ({e}); clear the buffer."
            ) from e
        return index

    def _write_index(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.folder / (INDEX + ".tmp")
        tmp.write_text(json.dumps(self.index, indent=1))
        os.replace(tmp, self.folder / INDEX)  # atomic: a crash never leaves half an index

    @property
    def size_bytes(self) -> int:
        return sum(s["bytes"] for s in self.index["shards"])

    @property
    def positions(self) -> int:
        return sum(s["positions"] for s in self.index["shards"])

    def __len__(self) -> int:
        return len(self.index["shards"])

    def add(self, seq: Sequence) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        name = f"seq-{self.index['next']:07d}.safetensors"
        arrays = {
            "ids": seq.ids,
            "positions": seq.positions,
            "topk_ids": seq.topk_ids,
            "topk_logprobs": seq.topk_logprobs,
            "rejected": seq.rejected.astype(np.uint8),
        }
        save_file(arrays, str(self.folder / name))
        size = (self.folder / name).stat().st_size
        self.index["next"] += 1
        self.index["shards"].append({"file": name, "bytes": size, "positions": len(seq)})
        self.trim()

    def trim(self) -> None:
        """Drop the oldest shards while the buffer is over its cap."""
        while self.size_bytes > self.cap_bytes and self.index["shards"]:
            old = self.index["shards"].pop(0)
            (self.folder / old["file"]).unlink(missing_ok=True)
        self._write_index()

    @property
    def recorded_total(self) -> int:
        """Sequences ever added (never decreases: tells new recordings from old ones)."""
        return self.index["next"] - 1

    def load(self, shard: dict) -> Sequence:
        a = load_file(str(self.folder / shard["file"]))
        return Sequence(a["ids"], a["positions"], a["topk_ids"], a["topk_logprobs"],
                        a["rejected"].astype(bool))

    def sequences(self) -> list[Sequence]:
        return [self.load(s) for s in self.index["shards"]]

    def split(self, holdout_fraction: float) -> tuple[list[Sequence], list[Sequence]]:
        """(train, held-out): the newest sequences are held out (at least one when there are
        two or more), so early stopping judges on data the adapters never saw."""
        seqs = self.sequences()
        n_hold = int(round(holdout_fraction * len(seqs)))
        n_hold = max(1, n_hold) if len(seqs) >= 2 else 0
        return seqs[: len(seqs) - n_hold], seqs[len(seqs) - n_hold :]

    def clear(self) -> None:
        for s in self.index["shards"]:
            (self.folder / s["file"]).unlink(missing_ok=True)
        self.index = {"version": 1, "next": self.index["next"], "shards": []}
        self._write_index()
