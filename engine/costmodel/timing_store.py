"""What the auto policy measured about a pair, kept across processes.

Before its first tree the policy (engine.costmodel.policy) times one 1-token draft forward
against a few of ar's passes; a fresh process would pay that forward again for a draft that can
never win. The measures live in a small versioned JSON (`TIMINGS_FILE` beside the models
folder), keyed by everything they depend on: both models' identity (folder, weight files' sizes
and times, config hash), the device, the weights' dtypes, the target's residency (resident or
its streaming budget) and the BLAS thread count. A generation starts from the stored entry
(the policy decides "this draft never wins" before its first step) and stores what it measured
when it ends (the fastest seen per key: load only slows a measure down). An unreadable or
corrupt file is ignored with a logged warning, never an error.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import platform
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from ..blas_threads import blas_threads
from ..config import TIMINGS_FILE, TIMINGS_MAX_ENTRIES, TIMINGS_VERSION

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PairTiming:
    """The policy's measures of one pair on one machine (seconds)."""

    draft_forward_seconds: float  # one 1-token draft forward, d(1)
    target_pass_seconds: float  # one 1-token target pass, v(1) (reads included when streamed)
    target_io_seconds: float = 0.0  # of that pass: waiting for layers or reading them
    overhead_seconds: float = 0.0  # the rest of a step, o

    @classmethod
    def from_dict(cls, d) -> PairTiming | None:
        """None unless every field is a finite number >= 0 and both passes took time."""
        try:
            values = {f.name: float(d[f.name]) for f in fields(cls)}
        except (KeyError, TypeError, ValueError):
            return None
        if not all(math.isfinite(v) and v >= 0 for v in values.values()):
            return None
        if values["draft_forward_seconds"] <= 0 or values["target_pass_seconds"] <= 0:
            return None
        return cls(**values)


def model_identity(loaded) -> dict:
    """A loaded model's folder, weight files (name, size, mtime) and config hash: rebuilt or
    replaced weights are another model."""
    folder = Path(loaded.path).resolve()
    files = sorted(folder.glob("*.safetensors"))
    config = folder / "config.json"
    return {
        "path": str(folder),
        "weights": [[f.name, f.stat().st_size, f.stat().st_mtime_ns] for f in files],
        "config_sha256": hashlib.sha256(config.read_bytes()).hexdigest()[:16],
    }


def weight_dtypes(model) -> list[str]:
    """The dtypes of the weights outside the transformer layers (always resident, also in a
    streamed target's shell, whose unread layers are placeholders)."""
    from mlx.utils import tree_flatten

    params = tree_flatten(getattr(model, "shell", model).parameters())
    return sorted({str(v.dtype) for name, v in params if "layers." not in name})


def pair_parts(target, draft) -> dict:
    """Everything the pair's timings depend on (the key of its entry)."""
    import mlx.core as mx

    store = getattr(getattr(target, "model", None), "store", None)  # a streamed target
    budget = getattr(store, "budget", None)
    return {
        "target": model_identity(target) | {"dtypes": weight_dtypes(target.model)},
        "draft": model_identity(draft) | {"dtypes": weight_dtypes(draft.model)},
        "device": f"{mx.default_device()} {platform.system()} {platform.machine()}",
        "cpus": os.cpu_count(),
        "target_residency": "resident" if budget is None else f"streamed {int(budget)} bytes",
        "blas_threads": blas_threads(),
    }


def parts_key(parts: dict) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]


def default_timings_path() -> Path:
    """$CANOPY_TIMINGS_FILE if set (tests: a temporary file), else `TIMINGS_FILE` beside the
    models folder ($CANOPY_HOME/timings.json when CANOPY_HOME is set)."""
    from ..formats.demo import models_home

    if env := os.environ.get("CANOPY_TIMINGS_FILE"):
        return Path(env).expanduser()
    return models_home().parent / TIMINGS_FILE


@dataclass
class PairEntry:
    """One generation's link to the store: the stored measures (None: none yet) and where to
    keep what it measures."""

    store: TimingStore
    key: str
    parts: dict
    stored: PairTiming | None

    def keep(self, timing: PairTiming) -> None:
        try:
            self.store.save(self.key, self.parts, timing)
        except Exception as e:  # the answer is complete: a timing kept or not never fails it
            log.warning("Canopy could not keep the pair's timing (%s: %s).", type(e).__name__, e)


class TimingStore:
    """The JSON file of pairs' timings; `path=None`: nothing is read or kept."""

    def __init__(self, path: str | Path | None):
        self.path = None if path is None else Path(path).expanduser()

    @classmethod
    def default(cls) -> TimingStore:
        return cls(default_timings_path())

    def entry(self, target, draft, draft_vocab: str | int = "auto") -> PairEntry | None:
        """The pair's entry, with its stored timing if any (None: the store is off or the
        models' files cannot be read). `draft_vocab`: the draft's head rows setting (a
        vocabulary subset makes its forward cheaper)."""
        if self.path is None:
            return None
        try:
            parts = pair_parts(target, draft) | {"draft_vocab": str(draft_vocab)}
        except Exception as e:  # a folder gone since loading, a model without files: no store
            log.warning("Canopy cannot identify the pair for its timing file (%s); the draft "
                        "is timed in this process only.", e)
            return None
        key = parts_key(parts)
        return PairEntry(self, key, parts, self.load(key))

    def load(self, key: str) -> PairTiming | None:
        """The timing stored for `key` (None: none, or not usable)."""
        if self.path is None:
            return None
        found = self._entries().get(key)
        return PairTiming.from_dict(found.get("timing")) if isinstance(found, dict) else None

    def save(self, key: str, parts: dict, timing: PairTiming) -> None:
        """Keep `timing` for `key`, merged with what was there (`merged`), atomically; a
        failure to write is logged, never raised."""
        if self.path is None:
            return
        entries = self._entries(quiet=True)
        old = entries.get(key)
        old = PairTiming.from_dict(old.get("timing")) if isinstance(old, dict) else None
        timing = merged(old, timing)
        entries[key] = {"parts": parts, "timing": asdict(timing), "updated": time.time()}
        if len(entries) > TIMINGS_MAX_ENTRIES:
            by_age = sorted(entries, key=lambda k: _updated(entries[k]), reverse=True)
            entries = {k: entries[k] for k in by_age[:TIMINGS_MAX_ENTRIES]}
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps({"version": TIMINGS_VERSION, "entries": entries}))
            os.replace(tmp, self.path)
        except OSError as e:
            log.warning("Canopy cannot write its timing file %s (%s); the draft's timing is "
                        "kept in this process only.", self.path, e)
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)

    def _entries(self, quiet: bool = False) -> dict:
        """The file's entries; {} when it is missing, unreadable, corrupt or of another
        version (warned unless `quiet`: the next save replaces it)."""
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            problem = f"it cannot be read ({type(e).__name__}: {e})"
        else:
            if not isinstance(data, dict) or data.get("version") != TIMINGS_VERSION:
                version = data.get("version") if isinstance(data, dict) else None
                problem = f"its version is {version!r}, not {TIMINGS_VERSION}"
            elif not isinstance(data.get("entries"), dict):
                problem = "it has no entries"
            else:
                return dict(data["entries"])
        if not quiet:
            log.warning("Canopy ignores its timing file %s: %s. The draft is timed again and "
                        "the file rewritten.", self.path, problem)
        return {}


def merged(old: PairTiming | None, new: PairTiming) -> PairTiming:
    """The fastest draft forward and target pass seen for the same key (same models, device,
    dtypes, residency and threads: other jobs' load only ever slows a measure down, and a
    draft timed slow under load would otherwise stay at ar in every later process); the
    pass's IO share goes with it, the step overhead is the newest."""
    if old is None:
        return new
    keep = new if new.target_pass_seconds <= old.target_pass_seconds else old
    return PairTiming(min(old.draft_forward_seconds, new.draft_forward_seconds),
                      keep.target_pass_seconds, keep.target_io_seconds, new.overhead_seconds)


def _updated(entry) -> float:
    try:
        return float(entry.get("updated", 0.0))
    except (AttributeError, TypeError, ValueError):
        return 0.0
