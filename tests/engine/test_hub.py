"""`canopy models pull` against a fake Hub on 127.0.0.1 (tests/fake_hub.py): complete,
dropped connection resumed, interrupted then resumed, a half file resumed by the next run,
cancel, 404s, no network, the CLI."""

from __future__ import annotations

import hashlib
import socket
from pathlib import Path

import pytest

from app.cli import main
from engine.errors import ModelError
from engine.formats.demo import list_models
from engine.formats.hub import PullCancelled, is_complete_model_dir, pull_model
from engine.formats.loader import load_model
from tests.fake_hub import REPO, SHA, FakeHub, tiny_repo_files


@pytest.fixture(scope="module")
def model_files(tmp_path_factory):
    return tiny_repo_files(tmp_path_factory.mktemp("hubsrc"))


@pytest.fixture
def hub(model_files):
    server = FakeHub(dict(model_files))
    yield server
    server.close()


def weight_files(files) -> list[str]:
    return [f for f in files if f.endswith(".safetensors")]


def test_pull_complete_only_needed_files(hub, tmp_path, model_files):
    events = []
    path = pull_model(REPO, cache_dir=tmp_path, endpoint=hub.url, progress=events.append)
    assert path == tmp_path / "models--tiny-org--tiny-model" / "snapshots" / SHA
    names = {p.name for p in path.iterdir()}
    assert "model.gguf" not in names and "README.md" not in names
    for f in weight_files(model_files) + ["config.json"]:
        assert (path / f).read_bytes() == model_files[f]
    assert is_complete_model_dir(path)
    load_model(path)  # a usable model folder
    assert events and events[-1].done == events[-1].total >= sum(
        len(model_files[f]) for f in weight_files(model_files))
    assert {g[0] for g in hub.gets}.isdisjoint({"model.gguf", "README.md"})


def test_dropped_connection_resumes_with_range(hub, tmp_path, model_files, monkeypatch):
    from huggingface_hub import constants

    # the client keeps only whole chunks (10 MB); small chunks let a tiny file be resumed
    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 4096)
    big = max(weight_files(model_files), key=lambda f: len(model_files[f]))
    cut = len(model_files[big]) // 3
    hub.cut[big] = cut
    path = pull_model(REPO, cache_dir=tmp_path, endpoint=hub.url, max_workers=1)
    assert (path / big).read_bytes() == model_files[big]
    ranges = [r for f, r in hub.gets if f == big]
    assert ranges[0] is None and ranges[1] == f"bytes={cut - cut % 4096}-"  # whole chunks kept


def test_interrupted_pull_is_not_listed_then_resumes(hub, tmp_path, model_files, monkeypatch):
    shards = sorted(weight_files(model_files))
    hub.fail[shards[-1]] = 500
    with pytest.raises(ModelError, match="run the same command again|Run the same command"):
        pull_model(REPO, cache_dir=tmp_path, endpoint=hub.url, max_workers=1)
    snapshot = tmp_path / "models--tiny-org--tiny-model" / "snapshots" / SHA
    assert not is_complete_model_dir(snapshot)  # the finished files alone do not look complete
    assert not list(tmp_path.rglob("*.incomplete"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    assert REPO not in [m.name for m in list_models(tmp_path / "no-models")]
    done_before = {f for f, _ in hub.gets if f != shards[-1]}
    hub.fail.clear()
    hub.gets.clear()
    path = pull_model(REPO, cache_dir=tmp_path, endpoint=hub.url)
    assert is_complete_model_dir(path)
    fetched = {f for f, _ in hub.gets}
    assert shards[-1] in fetched and done_before and not fetched & done_before  # kept
    assert REPO in [m.name for m in list_models(tmp_path / "no-models")]


def test_cancel_keeps_nothing_half_written(hub, tmp_path):
    with pytest.raises(PullCancelled):
        pull_model(REPO, cache_dir=tmp_path, endpoint=hub.url, should_stop=lambda: True)
    assert not list(tmp_path.rglob("*.incomplete"))  # no byte had arrived: no empty file left
    assert not is_complete_model_dir(tmp_path / "models--tiny-org--tiny-model" / "snapshots" / SHA)


def cancel_mid_file(hub, tmp_path, model_files, monkeypatch) -> tuple[str, Path]:
    """Run a pull that is stopped (as by Ctrl-C) in the middle of a weight file; return that
    file's name and the partial file the run left in the blob store."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 4096)
    seen = {"done": 0}
    stop_at = min(len(model_files[f]) for f in weight_files(model_files)) // 2
    with pytest.raises(PullCancelled):
        pull_model(REPO, cache_dir=tmp_path, endpoint=hub.url, max_workers=1,
                   progress=lambda e: seen.update(done=e.done),
                   should_stop=lambda: seen["done"] >= stop_at)
    snapshot = tmp_path / "models--tiny-org--tiny-model" / "snapshots" / SHA
    assert not is_complete_model_dir(snapshot)
    (partial,) = tmp_path.rglob("blobs/*.incomplete")
    have = partial.read_bytes()
    (name,) = [f for f in weight_files(model_files) if model_files[f].startswith(have)]
    assert 0 < len(have) < len(model_files[name]) and not (snapshot / name).exists()
    return name, partial


def test_half_file_resumes_in_the_next_run(hub, tmp_path, model_files, monkeypatch):
    name, partial = cancel_mid_file(hub, tmp_path, model_files, monkeypatch)
    have = partial.stat().st_size
    hub.gets.clear()
    events = []
    path = pull_model(REPO, cache_dir=tmp_path, endpoint=hub.url, progress=events.append)
    assert [r for f, r in hub.gets if f == name] == [f"bytes={have}-"]  # only the rest
    assert (path / name).read_bytes() == model_files[name]
    assert is_complete_model_dir(path) and not list(tmp_path.rglob("*.incomplete"))
    load_model(path)
    assert events[-1].done == events[-1].total  # bytes kept on disk count as done


def test_resumed_file_with_wrong_bytes_is_fetched_whole(hub, tmp_path, model_files,
                                                         monkeypatch):
    hub.sha256_etags = True  # as the Hub for LFS files: the content can be checked
    name, partial = cancel_mid_file(hub, tmp_path, model_files, monkeypatch)
    assert partial.name.removesuffix(".incomplete") == hashlib.sha256(
        model_files[name]).hexdigest()
    data = bytearray(partial.read_bytes())
    data[0] ^= 0xFF  # the disk kept something else
    partial.write_bytes(bytes(data))
    hub.gets.clear()
    path = pull_model(REPO, cache_dir=tmp_path, endpoint=hub.url)
    assert [r for f, r in hub.gets if f == name] == [f"bytes={len(data)}-", None]
    assert (path / name).read_bytes() == model_files[name]


def test_missing_repo_and_revision(hub, tmp_path):
    with pytest.raises(ModelError, match="No model nobody/nothing on the Hub"):
        pull_model("nobody/nothing", cache_dir=tmp_path, endpoint=hub.url)
    with pytest.raises(ModelError, match="has no revision 'v9'"):
        pull_model(REPO, "v9", cache_dir=tmp_path, endpoint=hub.url)
    with pytest.raises(ModelError, match="not a Hub repo id"):
        pull_model("just-a-name", cache_dir=tmp_path, endpoint=hub.url)


def test_no_network_one_clear_message(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ModelError, match="Cannot reach the Hugging Face Hub"):
        pull_model(REPO, cache_dir=tmp_path, endpoint=f"http://127.0.0.1:{port}")
    assert not is_complete_model_dir(tmp_path / "models--tiny-org--tiny-model" / "snapshots" / SHA)


def test_cli_pull(hub, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    assert main(["models", "pull", REPO]) == 0
    out = capsys.readouterr()
    assert out.out.strip() == str(tmp_path / "models--tiny-org--tiny-model" / "snapshots" / SHA)
    assert "download" in out.err
    assert main(["models", "pull", "nobody/nothing"]) == 2
    assert "No model nobody/nothing" in capsys.readouterr().err
    assert main(["models", "pull", REPO, "--revision", SHA]) == 0


def test_hub_files_are_in_the_hf_cache_layout(hub, tmp_path):
    path = pull_model(REPO, cache_dir=tmp_path, endpoint=hub.url)
    assert (tmp_path / "models--tiny-org--tiny-model" / "refs" / "main").read_text() == SHA
    assert all(Path(p).is_symlink() or Path(p).is_file() for p in path.iterdir())
