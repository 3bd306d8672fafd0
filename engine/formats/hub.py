"""Models from the Hugging Face Hub, into the standard HF cache (mlx-lm and LM Studio find them
there too, and Canopy finds theirs).

`pull_model` downloads only the files a model folder needs (config, safetensors weights and
index, tokenizer files) through `huggingface_hub.snapshot_download`. Finished files are kept, so
running it again resumes; a file cut short is retried from where it stopped (HTTP Range), within
a run by huggingface_hub and, for the weights, across runs by engine.formats.hub_resume; a file
never lands in a snapshot half-written. `is_complete_model_dir` is how listings tell a finished
snapshot from an interrupted one.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from pathlib import Path

from ..errors import CanopyError, ModelError
from ..events import LoadProgress
from .hub_resume import WEIGHT_PATTERNS, fetch_weights

# Everything a model folder needs, nothing else (no .bin/.pth/.gguf/onnx duplicates).
NEEDED_FILES = (
    "config.json",
    "generation_config.json",
    "*.safetensors",
    "model.safetensors.index.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "tokenizer.model",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "chat_template.jinja",
    "chat_template.json",
)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json")


class PullCancelled(CanopyError):
    pass


def hub_cache() -> Path:
    """The HF cache folder, resolved from the environment as huggingface_hub does."""
    if env := os.environ.get("HF_HUB_CACHE"):
        return Path(env).expanduser()
    if env := os.environ.get("HF_HOME"):
        return Path(env).expanduser() / "hub"
    cache = os.environ.get("XDG_CACHE_HOME")
    return (Path(cache).expanduser() if cache else Path.home() / ".cache") / "huggingface" / "hub"


def is_complete_model_dir(d: Path) -> bool:
    """config.json, a tokenizer and every weight file (all shards named by the index)."""
    d = Path(d)
    if not (d / "config.json").is_file() or not any((d / f).is_file() for f in TOKENIZER_FILES):
        return False
    index = d / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = set(json.loads(index.read_text())["weight_map"].values())
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return False
        return bool(shards) and all((d / s).is_file() for s in shards)
    return any(d.glob("*.safetensors"))


def pull_model(
    repo_id: str,
    revision: str | None = None,
    *,
    progress: Callable[[LoadProgress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    cache_dir: str | Path | None = None,
    endpoint: str | None = None,
    max_workers: int = 4,
) -> Path:
    """Download `repo_id` (at `revision`, default main) and return its snapshot folder.

    progress: LoadProgress("download", bytes done, bytes known so far), from worker threads.
    should_stop: polled as bytes arrive; True cancels (PullCancelled), finished files stay.
    endpoint: the Hub's address (default `HF_ENDPOINT`, else huggingface.co).
    Raises ModelError with what to do for a missing repo/revision, no network, or a download
    that is not a usable model.
    """
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise ModelError(f"{repo_id!r} is not a Hub repo id: use ORG/NAME, e.g. "
                         "mlx-community/Qwen2.5-0.5B-Instruct-4bit.")
    endpoint = endpoint or os.environ.get("HF_ENDPOINT") or None
    where = endpoint or "https://huggingface.co"
    cache = Path(cache_dir or hub_cache())
    tqdm_class = _progress_class(progress, should_stop)
    try:
        _fetch_weights_resumable(repo_id, revision, cache, endpoint, max_workers, tqdm_class)
        path = snapshot_download(
            repo_id, revision=revision, cache_dir=str(cache), allow_patterns=list(NEEDED_FILES),
            endpoint=endpoint, max_workers=max_workers, tqdm_class=tqdm_class,
        )
    except RevisionNotFoundError as e:
        raise ModelError(f"{repo_id} has no revision {revision!r} on the Hub. Check the "
                         "branch, tag or commit name.") from e
    except RepositoryNotFoundError as e:
        raise ModelError(f"No model {repo_id} on the Hub at {where} (or it is private or gated: "
                         "log in with `hf auth login` and accept its licence).") from e
    except LocalEntryNotFoundError as e:
        raise ModelError(_offline(repo_id, where)) from e
    except OSError as e:  # includes a file that arrived with the wrong size
        raise ModelError(f"Downloading {repo_id} failed ({e}). Run the same command again to "
                         "resume; finished files are kept.") from e
    except Exception as e:
        if _is_network_error(e):
            raise ModelError(_offline(repo_id, where)) from e
        raise
    path = Path(path)
    if not is_complete_model_dir(path):
        raise ModelError(f"{repo_id} downloaded, but it is not a model Canopy can load (it needs "
                         "config.json, a tokenizer and *.safetensors weights; GGUF-only repos "
                         "need `canopy models import-gguf`).")
    return path


def _fetch_weights_resumable(repo_id, revision, cache: Path, endpoint, max_workers,
                             tqdm_class) -> None:
    """The weight files first, resuming bytes an earlier run left (engine.formats.hub_resume).
    Without a network this does nothing: snapshot_download then decides (a cached snapshot is
    still returned offline)."""
    from huggingface_hub import HfApi
    from huggingface_hub.utils import filter_repo_objects

    try:
        info = HfApi(endpoint=endpoint).model_info(repo_id, revision=revision or "main")
    except Exception as e:
        if _is_network_error(e):
            return
        raise
    names = [s.rfilename for s in info.siblings or []]
    weights = list(filter_repo_objects(names, allow_patterns=list(WEIGHT_PATTERNS)))
    fetch_weights(repo_id, info.sha, weights, cache_dir=cache, endpoint=endpoint,
                  max_workers=max_workers, tqdm_class=tqdm_class)


def _offline(repo_id: str, where: str) -> str:
    return (f"Cannot reach the Hugging Face Hub at {where} to download {repo_id}. Check the "
            "network connection and run the command again (finished files are kept).")


def _is_network_error(e: Exception) -> bool:
    try:
        import httpx2 as httpx
    except ImportError:
        try:
            import httpx
        except ImportError:
            return False
    return isinstance(e, httpx.TransportError)


def _progress_class(progress, should_stop):
    """A tqdm class for snapshot_download that reports bytes and honours cancel, silently."""
    from huggingface_hub.utils import tqdm as hf_tqdm

    lock = threading.Lock()
    totals = {"done": 0, "total": 0, "resumable": 0}
    report = progress or (lambda e: None)
    stop = should_stop or (lambda: False)

    class Progress(hf_tqdm):
        def __init__(self, *args, **kwargs):
            name = kwargs.get("name")
            # snapshot_download's aggregate bar carries every file it downloads; a bare http_get
            # bar is one weight file of hub_resume (total: the file; initial: bytes kept on disk)
            self._aggregate = name == "huggingface_hub.snapshot_download"
            self._counts_bytes = self._aggregate or name == "huggingface_hub.http_get"
            if name == "huggingface_hub.http_get":
                with lock:
                    totals["resumable"] += int(kwargs.get("total") or 0)
                    totals["done"] += int(kwargs.get("initial") or 0)
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)

        def update(self, n=1):
            if stop():
                raise PullCancelled("Download cancelled; run it again to resume.")
            if self._counts_bytes and n:
                with lock:
                    totals["done"] += int(n)
                    known = totals["resumable"] + (int(self.total or 0) if self._aggregate else 0)
                    totals["total"] = max(known, totals["total"], totals["done"])
                    event = LoadProgress("download", totals["done"], totals["total"])
                report(event)
            return super().update(n)

    return Progress
