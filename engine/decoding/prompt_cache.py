"""Conversation prompt cache: a conversation's KV caches kept between turns.

After an answer, the target's and the draft's caches stay with the conversation together with
the token ids they hold. The next turn's prompt is compared with those ids token by token: the
common prefix is reused (the caches are trimmed to it), only the rest is prefilled. A follow-up
extends the cached history (almost nothing to prefill); regenerate or edit shares a shorter
prefix. Caches are exact KV entries of the same model, so the output equals a cold run.

At most `max_conversations` (and `max_bytes`) stay in memory, least recently used evicted first;
with a `folder`, evicted conversations are written there as safetensors and read back on reuse.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass, field
from pathlib import Path

import mlx.core as mx

from ..config import PromptCacheConfig
from ..models.cache import KVCache, make_cache

FORMAT = "canopy-prompt-cache-1"


@dataclass
class CachedTokens:
    """One model's KV cache and the token ids whose keys/values it holds, in order."""

    ids: list[int]
    layers: list[KVCache]

    @property
    def nbytes(self) -> int:
        return sum(c.nbytes for c in self.layers)

    def reuse(self, prompt_ids: list[int]) -> list[KVCache]:
        """Trim to the longest prefix shared with `prompt_ids[:-1]` (the last prompt token is
        the first step's root, never cached) and return the layers."""
        n = common_prefix(self.ids, prompt_ids[:-1])
        for c in self.layers:
            c.trim(c.offset - n)
        del self.ids[n:]
        return self.layers


@dataclass
class ConversationCache:
    target: CachedTokens | None = None
    draft: CachedTokens | None = None

    @property
    def nbytes(self) -> int:
        return sum(part.nbytes for part in (self.target, self.draft) if part is not None)


def common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


class PromptCache:
    """LRU of `ConversationCache` by conversation key, bounded in count and bytes.

    Used from the engine thread only. `fingerprint` names the model pair: a disk entry written
    for another pair is never restored.
    """

    def __init__(self, config: PromptCacheConfig | None = None, fingerprint: str = ""):
        self.config = config or PromptCacheConfig()
        self.fingerprint = fingerprint
        # which draft weights the draft caches were computed with (e.g. an adapter version)
        self.draft_version = ""
        self._entries: OrderedDict[Hashable, ConversationCache] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._entries

    @property
    def nbytes(self) -> int:
        return sum(e.nbytes for e in self._entries.values())

    def take(self, key: Hashable) -> ConversationCache:
        """Remove and return the conversation's cache (from memory, else disk, else empty).

        The generator holds it while it runs; `put` gives it back when the answer is complete,
        so a failed or abandoned turn leaves nothing half-updated behind.
        """
        entry = self._entries.pop(key, None)
        if entry is None and self.config.folder is not None:
            entry = self._read(key)
        return entry or ConversationCache()

    def put(self, key: Hashable, entry: ConversationCache) -> None:
        self._entries[key] = entry
        self._entries.move_to_end(key)
        limit = self.config.max_bytes
        while len(self._entries) > self.config.max_conversations or (
            limit is not None and self.nbytes > limit and len(self._entries) > 1
        ):
            old_key, old = self._entries.popitem(last=False)
            if self.config.folder is not None:
                self._write(old_key, old)

    def drop(self, key: Hashable) -> None:
        """Forget a conversation (e.g. deleted) in memory and on disk."""
        self._entries.pop(key, None)
        if self.config.folder is not None:
            self._path(key).unlink(missing_ok=True)

    def drop_drafts(self, draft_version: str) -> None:
        """The draft's weights changed (an adapter adopted or removed): its cached KV entries no
        longer match them, so every conversation keeps only its target cache. Disk entries
        written under another draft version lose their draft part when read back."""
        self.draft_version = draft_version
        for entry in self._entries.values():
            entry.draft = None

    def flush(self) -> None:
        """Write every in-memory conversation to the folder (e.g. before the app quits)."""
        if self.config.folder is not None:
            for key, entry in self._entries.items():
                self._write(key, entry)

    # ---- disk ----
    def _path(self, key: Hashable) -> Path:
        digest = hashlib.sha256(f"{self.fingerprint}\0{key!r}".encode()).hexdigest()[:32]
        return Path(self.config.folder) / f"{digest}.safetensors"

    def _write(self, key: Hashable, entry: ConversationCache) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        save_conversation(path, entry, {"fingerprint": self.fingerprint, "key": repr(key),
                                        "draft_version": self.draft_version})
        self._prune(keep=path)

    def _prune(self, keep: Path) -> None:
        """Delete the least recently written files while the folder exceeds max_disk_bytes."""
        files = sorted(Path(self.config.folder).glob("*.safetensors"),
                       key=lambda f: f.stat().st_mtime_ns)
        total = sum(f.stat().st_size for f in files)
        for f in files:
            if total <= self.config.max_disk_bytes:
                break
            if f != keep:
                total -= f.stat().st_size
                f.unlink(missing_ok=True)

    def _read(self, key: Hashable) -> ConversationCache | None:
        path = self._path(key)
        if not path.exists():
            return None
        try:
            entry, meta = load_conversation(path)
        except (OSError, ValueError, RuntimeError, KeyError):
            path.unlink(missing_ok=True)  # unreadable (e.g. cut short): start cold
            return None
        if meta.get("fingerprint") != self.fingerprint or meta.get("key") != repr(key):
            return None
        if meta.get("draft_version", "") != self.draft_version:
            entry.draft = None  # computed with other draft weights
        return entry


def save_conversation(path: Path, entry: ConversationCache, meta: dict) -> None:
    """Both caches (valid entries only) in one safetensors file, written atomically."""
    arrays: dict[str, mx.array] = {}
    header = {"format": FORMAT, **meta}
    for name, part in (("target", entry.target), ("draft", entry.draft)):
        if part is None or not part.layers:
            continue
        header[f"{name}.ids"] = json.dumps(part.ids)
        header[f"{name}.layers"] = str(len(part.layers))
        for i, c in enumerate(part.layers):
            if c.keys is not None and c.offset:
                arrays[f"{name}.{i}.keys"] = c.keys[..., : c.offset, :]
                arrays[f"{name}.{i}.values"] = c.values[..., : c.offset, :]
    tmp = path.with_name(path.name + ".partial.safetensors")
    mx.save_safetensors(str(tmp), arrays, metadata=header)
    os.replace(tmp, path)


def load_conversation(path: Path) -> tuple[ConversationCache, dict]:
    arrays, meta = mx.load(str(path), return_metadata=True)
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path} is not a Canopy prompt cache")
    entry = ConversationCache()
    for name in ("target", "draft"):
        if f"{name}.ids" not in meta:
            continue
        ids = json.loads(meta[f"{name}.ids"])
        layers = make_cache(int(meta[f"{name}.layers"]))
        for i, c in enumerate(layers):
            if f"{name}.{i}.keys" in arrays:
                c.update_and_fetch(arrays[f"{name}.{i}.keys"], arrays[f"{name}.{i}.values"])
        if any(c.offset != len(ids) for c in layers):
            raise ValueError(f"{path}: cache length does not match its token ids")
        mx.eval([a for c in layers if c.keys is not None for a in (c.keys, c.values)])
        setattr(entry, name, CachedTokens(ids, layers))
    return entry, meta


@dataclass
class TurnCache:
    """One generation's use of its conversation's cache (see `engine.decoding.generate`).

    `store` None: a cold run whose caches are dropped afterwards.
    """

    store: PromptCache | None = None
    key: Hashable = None
    entry: ConversationCache = field(default_factory=ConversationCache)
    reused_target: int = 0  # prompt tokens whose target KV came from the cache
    reused_draft: int = 0

    def __post_init__(self):
        if self.store is not None:
            self.entry = self.store.take(self.key)

    def target_cache(self, num_layers: int, prompt_ids: list[int]) -> list[KVCache]:
        part = self.entry.target
        if part is None or len(part.layers) != num_layers:
            return make_cache(num_layers)
        layers = part.reuse(prompt_ids)
        self.reused_target = layers[0].offset if layers else 0
        return layers

    def attach_draft(self, drafter, prompt_ids: list[int]) -> None:
        """Give a model-backed drafter the cached draft cache (before its prefill)."""
        model = getattr(drafter, "draft", None)
        part = self.entry.draft
        if model is None or part is None or len(part.layers) != len(model.cache):
            return
        model.cache = part.reuse(prompt_ids)
        self.reused_draft = model.offset

    def finish(self, cache: list[KVCache], held: list[int], drafter) -> dict:
        """Keep the caches of a completed turn; returns the stats to report.

        `held`: the token ids whose entries `cache` holds (prompt and accepted paths).
        """
        entry = ConversationCache(CachedTokens(list(held), cache), self.entry.draft)
        model = getattr(drafter, "draft", None)
        if model is not None:
            drafter.rollback(len(held))  # drop draft work past the committed tokens
            entry.draft = CachedTokens(list(held[: model.offset]), model.cache)
        stats = {
            "prefill_cached_tokens": self.reused_target,
            "draft_prefill_cached_tokens": self.reused_draft,
            "kv_cache_bytes": entry.nbytes,
        }
        if self.store is not None:
            self.store.put(self.key, entry)
            stats["prompt_cache_bytes"] = self.store.nbytes
            stats["prompt_cache_conversations"] = len(self.store)
        return stats
