"""Where a (target, draft) pair's recordings and adapters live, and adapter versions.

`<data home>/adapt/<target>--<draft>-<hash>/` holds `buffer/` (engine.adapt.record.Buffer) and
`adapters/` (`v<N>.safetensors` + `adapters.json`: every version's settings and metrics, and
which one is adopted). The hash covers both folders' paths and weight files (size, mtime), so a
rebuilt draft does not inherit adapters trained for its predecessor.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from ..config import AdaptConfig
from ..errors import CanopyError
from ..formats.demo import models_home
from .record import Buffer

ADAPTERS_INDEX = "adapters.json"


def adapt_home() -> Path:
    """`adapt/` beside the models folder (so `$CANOPY_HOME/adapt` when CANOPY_HOME is set)."""
    return models_home().parent / "adapt"


def pair_id(target_dir: str | Path, draft_dir: str | Path) -> str:
    h = hashlib.sha256()
    for folder in (Path(target_dir).resolve(), Path(draft_dir).resolve()):
        h.update(str(folder).encode())
        for f in sorted(folder.glob("*.safetensors")):
            st = f.stat()
            h.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return f"{Path(target_dir).name}--{Path(draft_dir).name}-{h.hexdigest()[:10]}"


class PairStore:
    """Recording buffer and adapter versions of one (target, draft) pair."""

    def __init__(self, target_dir, draft_dir, config: AdaptConfig | None = None,
                 home: str | Path | None = None):
        self.config = config or AdaptConfig()
        self.folder = Path(home or adapt_home()) / pair_id(target_dir, draft_dir)
        self.buffer = Buffer(self.folder / "buffer", self.config.cap_bytes)
        self.adapters = self.folder / "adapters"

    def _index(self) -> dict:
        path = self.adapters / ADAPTERS_INDEX
        if not path.exists():
            return {"adopted": None, "versions": []}
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise CanopyError(f"{path} is corrupt ({e}); reset the adapters.") from e

    def _write(self, index: dict) -> None:
        self.adapters.mkdir(parents=True, exist_ok=True)
        tmp = self.adapters / (ADAPTERS_INDEX + ".tmp")
        tmp.write_text(json.dumps(index, indent=1))
        os.replace(tmp, self.adapters / ADAPTERS_INDEX)

    def versions(self) -> list[dict]:
        return self._index()["versions"]

    @property
    def adopted(self) -> int | None:
        return self._index()["adopted"]

    def save(self, adapter, metrics: dict, adopt: bool) -> int:
        """Write a new adapter version with its metrics; adopt it if asked. Returns the version."""
        index = self._index()
        version = 1 + max((v["version"] for v in index["versions"]), default=0)
        self.adapters.mkdir(parents=True, exist_ok=True)
        adapter.save(self.adapters / f"v{version}.safetensors")
        index["versions"].append({"version": version, "adopted": adopt, **metrics})
        if adopt:
            index["adopted"] = version
        self._write(index)
        return version

    def load_adopted(self):
        """The adopted adapter (engine.adapt.lora.Adapter), or None."""
        from .lora import Adapter

        version = self.adopted
        if version is None:
            return None
        path = self.adapters / f"v{version}.safetensors"
        if not path.exists():
            raise CanopyError(f"Adapter version {version} is missing ({path}); reset adapters.")
        return Adapter.load(path)

    def reset(self) -> None:
        """Forget every adapter version (the draft is used as shipped)."""
        for f in self.adapters.glob("v*.safetensors"):
            f.unlink()
        self._write({"adopted": None, "versions": []})
