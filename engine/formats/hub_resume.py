"""Weight files from the Hub that resume across runs (HTTP Range), into the HF cache's blob store.

huggingface_hub 2.4 downloads each file to a process-unique temporary name and deletes it when
the download fails, so bytes already on disk are lost when a run stops (cancel, Ctrl-C, a network
down longer than its retries). Before `snapshot_download` runs, `fetch_weights` downloads the
weight files into `blobs/<etag>.incomplete` of the same cache: a fixed name, so the next run asks
for the rest with a Range request. A whole file is renamed to `blobs/<etag>`, the name
huggingface_hub looks for, so snapshot_download only links it into the snapshot. Files the Hub
stores in Xet are left to huggingface_hub while it would use hf_xet (a dependency of
huggingface_hub 2.x: it transfers content-addressed chunks, not byte ranges); with
HF_HUB_DISABLE_XET=1 they take this path too, as huggingface_hub's own HTTP fallback does.
"""

from __future__ import annotations

import hashlib
import os
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlparse

WEIGHT_PATTERNS = ("*.safetensors",)  # the big files; the small ones finish in one go anyway
SHA256 = re.compile(r"[0-9a-f]{64}")  # an LFS file's etag is its content's sha256


def fetch_weights(repo_id: str, commit: str, filenames: list[str], *, cache_dir: Path,
                  endpoint: str | None, max_workers: int, tqdm_class) -> None:
    """Fetch `filenames` of `repo_id` at `commit` into the cache's blob store, resuming any
    `.incomplete` file a previous run left. tqdm_class receives the bytes (and may cancel)."""
    from huggingface_hub import constants
    from huggingface_hub.file_download import repo_folder_name

    if constants.HF_HUB_OFFLINE or not filenames:
        return
    storage = Path(cache_dir) / repo_folder_name(repo_id=repo_id, repo_type="model")
    locks = Path(cache_dir) / ".locks" / storage.name  # huggingface_hub's own lock per blob

    def fetch(name: str) -> None:
        fetch_blob(repo_id, commit, name, storage, locks, endpoint, tqdm_class)

    with ThreadPoolExecutor(max(1, max_workers)) as pool:
        for _ in pool.map(fetch, filenames):  # re-raises the first failure
            pass


def fetch_blob(repo_id: str, commit: str, filename: str, storage: Path, locks: Path,
               endpoint: str | None, tqdm_class) -> None:
    from huggingface_hub import get_hf_file_metadata, hf_hub_url
    from huggingface_hub.utils import WeakFileLock, build_hf_headers

    url = hf_hub_url(repo_id, filename, revision=commit, endpoint=endpoint)
    meta = get_hf_file_metadata(url, endpoint=endpoint)  # etag, size, location after redirects
    if not meta.etag or meta.size is None or (meta.xet_file_data and xet_in_use()):
        return  # nothing to resume by byte range: huggingface_hub downloads it
    blob = storage / "blobs" / meta.etag
    if blob.exists():
        return
    blob.parent.mkdir(parents=True, exist_ok=True)
    locks.mkdir(parents=True, exist_ok=True)
    # huggingface_hub's choice of address: a Xet file's plain-HTTP fallback asks the Hub again
    source = url if meta.xet_file_data else meta.location
    headers = build_hf_headers()
    if urlparse(source).netloc != urlparse(url).netloc:
        headers.pop("authorization", None)  # a signed CDN address: no Hub token there
    with WeakFileLock(locks / f"{meta.etag}.lock"):
        if blob.exists():  # another process finished it while we waited
            return
        partial = blob.with_name(f"{meta.etag}.incomplete")
        resumed = download_rest(source, partial, meta.size, headers, filename, tqdm_class)
        if resumed and SHA256.fullmatch(meta.etag) and sha256_of(partial) != meta.etag:
            # bytes kept from an earlier run do not match: fetch the whole file once more
            partial.unlink()
            download_rest(source, partial, meta.size, headers, filename, tqdm_class)
            if sha256_of(partial) != meta.etag:
                partial.unlink()
                raise OSError(f"{filename} arrived with the wrong content (sha256)")
        os.replace(partial, blob)


def xet_in_use() -> bool:
    """Whether huggingface_hub would hand a Xet-stored file to hf_xet (its own rule)."""
    import importlib.util

    from huggingface_hub import constants

    return not constants.HF_HUB_DISABLE_XET and importlib.util.find_spec("hf_xet") is not None


def download_rest(url: str, partial: Path, size: int, headers: dict, filename: str,
                  tqdm_class) -> bool:
    """Append the bytes `partial` lacks (Range from its length); True if it resumed."""
    from huggingface_hub.file_download import http_get

    have = partial.stat().st_size if partial.exists() else 0
    if have > size:  # not a prefix of this file: start again
        partial.unlink()
        have = 0
    try:
        with open(partial, "r+b" if have else "wb") as f:
            f.seek(have)
            http_get(url, f, resume_size=have, headers=headers, expected_size=size,
                     displayed_filename=filename, tqdm_class=tqdm_class)
    finally:
        if partial.exists() and partial.stat().st_size == 0:
            partial.unlink()  # nothing arrived: leave no empty file behind
    return have > 0


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 23):
            h.update(block)
    return h.hexdigest()
