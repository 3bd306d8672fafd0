"""Hostile inputs: every reader and the CLI end each input in one clear CanopyError or a correct
answer - never a hang, a crash, a traceback or an "Internal error".

Deterministic (seeded) and bounded; `pytest -s tests/test_fuzz.py` prints the counts per reader.
Weight files are only ever parsed as data (safetensors, GGUF); nothing is unpickled.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
from collections import Counter
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

from engine.errors import CanopyError
from tests import fuzz_cases as F

COUNTS: dict[str, Counter] = {}
SECONDS = 20  # per input: far above any honest answer on a tiny model


@pytest.fixture(scope="module", autouse=True)
def report():
    yield
    total = sum(sum(c.values()) for c in COUNTS.values())
    print(f"\nfuzz: {total} inputs")
    for reader, c in COUNTS.items():
        print(f"  {reader}: {sum(c.values())} inputs, " + ", ".join(f"{k} {v}" for k, v in
                                                                   sorted(c.items())))


@contextlib.contextmanager
def deadline(seconds: float, case: str):
    def expired(*_):
        raise TimeoutError(f"{case}: no answer within {seconds} s (a hang)")

    old = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def outcome(reader: str, case: str, fn) -> str:
    """Run fn; "ok" or "clear error"; anything else fails the test naming the case."""
    counts = COUNTS.setdefault(reader, Counter())
    try:
        with deadline(SECONDS, case):
            fn()
    except CanopyError as e:
        message = str(e)
        assert message.strip() and "Internal error" not in message, (reader, case, message)
        assert "Traceback" not in message, (reader, case, message)
        counts["clear error"] += 1
        return "clear error"
    except Exception as e:  # noqa: BLE001 - the point of the test
        pytest.fail(f"{reader}: input {case!r} raised {type(e).__name__}: {e}")
    counts["ok"] += 1
    return "ok"


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    from engine.testing import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("fuzz") / "base", seed=8)


def model_copy(base: Path, dest: Path, **files: bytes) -> Path:
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(base, dest)
    for name, data in files.items():
        (dest / name.replace("_", ".", 1).replace("_json", ".json")).write_bytes(data)
    return dest


def write(d: Path, name: str, data: bytes) -> Path:
    (d / name).write_bytes(data)
    return d


def check_model(d: Path, reference=None):
    """Load resident and streamed; when it loads, a forward pass must work and (for inputs that
    still describe the same model) give the reference logits."""
    from engine.formats.loader import load_model
    from engine.streaming.streamed_model import load_streamed_model

    m = load_model(d)
    logits = m.model(mx.array([[1, 2, 3]]))
    mx.eval(logits)
    if reference is not None and logits.shape == reference.shape:
        assert mx.allclose(logits, reference).item()
    s = load_streamed_model(d, 10**9)
    try:
        mx.eval(s.model(mx.array([[1, 2, 3]])))
    finally:
        s.close()


def test_safetensors_readers(base, tmp_path):
    from engine.formats.loader import load_model, read_weights
    from engine.streaming.weights import build_index, read_tensors

    reference = load_model(base).model(mx.array([[1, 2, 3]]))
    data = (base / "model.safetensors").read_bytes()
    d = tmp_path / "m"
    shutil.copytree(base, d)
    f = d / "model.safetensors"
    cases = list(F.safetensors_cases(data, seed=1))
    assert len(cases) > 150
    for case, blob in cases:
        f.write_bytes(blob)

        def index_and_read():
            index = build_index([f])
            read_tensors(list(index.tensors.values()), bypass_cache=False)

        outcome("safetensors index + read", case, index_and_read)
        outcome("safetensors mx.load", case, lambda: mx.eval(list(read_weights([f]).values())))
        outcome("model folder (safetensors)", case, lambda: check_model(d, reference))


def test_nan_and_inf_weights_end_in_a_clear_error(base, tmp_path):
    """Weights that hold NaN/Inf load (they are data), but generation must not emit garbage:
    it fails with a message saying the weights are broken."""
    from engine.config import GenerationConfig
    from engine.events import Failed
    from engine.formats.loader import read_weights, weight_files
    from engine.session import Session
    from engine.testing import save_weights

    for bad in (float("nan"), float("inf"), -float("inf")):
        d = tmp_path / f"w{bad}"
        shutil.copytree(base, d)
        w = {k: np.array(v) for k, v in read_weights(weight_files(base)).items()}
        w["model.layers.0.mlp.down_proj.weight"][3, :] = bad
        (d / "model.safetensors").unlink()
        save_weights(d, w)
        for budget in (None, 10**9):
            session = Session.load(d, budget_bytes=budget)
            try:
                last = list(session.generate([5, 6, 7], GenerationConfig(mode="ar",
                                                                        max_tokens=4)))[-1]
            finally:
                session.close()
            counts = COUNTS.setdefault("NaN/Inf weights", Counter())
            assert isinstance(last, Failed), (bad, last)
            assert "NaN" in last.message and str(d) in last.message, last.message
            assert "Internal error" not in last.message
            counts["clear error"] += 1


def test_config_json(base, tmp_path):
    config = json.loads((base / "config.json").read_text())
    d = tmp_path / "m"
    shutil.copytree(base, d)
    cases = list(F.config_cases(config))
    for case, blob in cases:
        (d / "config.json").write_bytes(blob)
        outcome("config.json", case, lambda: check_model(d))


def test_tokenizer_files(base, tmp_path):
    from engine.formats.loader import load_model
    from engine.session import Session

    d = tmp_path / "m"
    shutil.copytree(base, d)
    good = (base / "tokenizer.json").read_bytes()
    good_config = (base / "tokenizer_config.json").read_bytes()
    cases = [("tokenizer.json", c, b) for c, b in F.tokenizer_cases(good, seed=2)]
    cfg = json.loads(good_config)
    for label, template in (("unclosed tag", "{% for m in messages %}"),
                            ("undefined call", "{{ raise_exception('no') }}"),
                            ("not a string", 42), ("runaway", "{{ messages * 10**9 }}")):
        cases.append(("tokenizer_config.json", f"chat template {label}",
                      json.dumps({**cfg, "chat_template": template}).encode()))
    cases.append(("tokenizer_config.json", "not JSON", b"{"))

    def use():
        session = Session(load_model(d))
        for text in F.HOSTILE_TEXT:
            ids = session.encode(text)
            session.tokenizer.decode(ids)
            session.encode_chat([{"role": "user", "content": text}], system=text)

    for name, case, blob in cases:
        (d / "tokenizer.json").write_bytes(good)
        (d / "tokenizer_config.json").write_bytes(good_config)
        (d / name).write_bytes(blob)
        outcome("tokenizer files", f"{name}: {case}", use)
    assert COUNTS["tokenizer files"]["ok"] >= 1  # the unchanged files work


def test_gguf_reader_and_import(base, tmp_path):
    pytest.importorskip("gguf")
    from engine.formats.gguf import import_gguf, scan_gguf
    from tests.engine.test_gguf import write_gguf

    src = tmp_path / "src.gguf"
    write_gguf(base, src)
    data = src.read_bytes()
    end = F.gguf_header_end(data)
    f = tmp_path / "x.gguf"
    imported = 0
    for n, (case, blob) in enumerate(F.gguf_cases(data, end, seed=3)):
        f.write_bytes(blob)
        outcome("GGUF header scan", case, lambda: scan_gguf(f))
        if n % 2 == 0 if not case.startswith("truncated") else n % 97 == 0:  # a sample
            imported += 1
            outcome("GGUF import", case,
                    lambda: import_gguf(f, tmp_path / "out", overwrite=True))
    assert imported > 60 and sum(COUNTS["GGUF header scan"].values()) > end


def test_prompts_through_the_engine(base):
    from engine.config import GenerationConfig
    from engine.events import Failed, Finished
    from engine.session import Session

    session = Session.load(base, base)
    n_ctx = session.context_length
    prompts = [(f"hostile text #{i}", t) for i, t in enumerate(F.HOSTILE_TEXT) if t]
    prompts.append(("100 kB prompt", "x y " * 25_000))
    prompts.append(("100 kB of control characters", "\x01\x02\x1b" * 34_000))
    for case, text in prompts:
        def run(text=text):
            ids = session.encode_chat([{"role": "user", "content": text}])
            last = list(session.generate(ids, GenerationConfig(mode="tree", max_tokens=3)))[-1]
            assert isinstance(last, Finished), last
        outcome("prompts", case, run)
    assert COUNTS["prompts"]["clear error"] >= 2  # the long ones: longer than the context
    ids = [5] * (n_ctx - 3)
    got = list(session.generate(ids, GenerationConfig(mode="ar", max_tokens=3)))[-1]
    assert isinstance(got, Finished) and not isinstance(got, Failed)  # exactly fits
    outcome("prompts", "context + 1", lambda: list(session.generate(
        ids, GenerationConfig(mode="ar", max_tokens=4))))
    outcome("prompts", "empty prompt", lambda: [e for e in session.generate(
        [], GenerationConfig(mode="ar", max_tokens=2)) if isinstance(e, Failed) and
        (_ for _ in ()).throw(CanopyError(e.message))])


CLI_VALUES = {
    "--max-tokens": ["-1", "0", "3", str(10**9), "x", "nan"],
    "--temperature": ["-1", "nan", "inf", "1e308", "0.7", "0"],
    "--top-p": ["0", "-1", "2", "nan", "0.9"],
    "--seed": ["-1", str(2**70), "1"],
    "--mode": ["ar", "chain", "tree", "bogus", ""],
    "--budget-mb": ["0", "-5", "nan", "1e-9", "1e12", "0.3"],
    "--prefetch": ["0", "-1", "1"],
    "--read-timeout": ["0", "-1", "nan", "30"],
    "--tree-nodes": ["0", "-3", "1", "16"],
    "--tree-depth": ["0", "-1", "4"],
    "--threshold": ["nan", "-1", "2", "0.1"],
    "--chain-length": ["0", "-1", "3"],
    "--prompt": [*F.HOSTILE_TEXT[1:6], "hello"],
}


def cli_cases(pair, seed: int = 5, n: int = 90):
    rng = np.random.default_rng(seed)
    keys = list(CLI_VALUES)
    target, draft = str(pair["target"]), str(pair["noisy"])
    fixed = [["generate", "--target", "/nonexistent", "--prompt", "x"],
             ["generate", "--target", "/dev/null", "--prompt", "x"],
             ["generate", "--target", target, "--draft", str(Path(target) / "config.json"),
              "--prompt", "x"],
             ["generate", "--target", target, "--draft", str(pair["unrelated"]), "--prompt", "x",
              "--max-tokens", "2"],
             ["generate", "--target", target, "--prompt", "x" * 100_000, "--max-tokens", "2"],
             ["models", "import-gguf", "/dev/null", "/nonexistent/out"],
             ["models", "import-gguf", target, "/tmp/x"],
             ["soak", "--generations", "-3"], ["bench", "--prompts", "-1"], [], ["--bogus"]]
    for argv in fixed:
        yield " ".join(a[:30] for a in argv), argv
    for k in range(n):
        argv = ["generate", "--target", target, "--draft", draft, "--max-tokens", "3"]
        for key in rng.choice(keys, size=int(rng.integers(1, 5)), replace=False):
            values = CLI_VALUES[key]
            argv += [key, values[int(rng.integers(len(values)))]]
        if "--prompt" not in argv:
            argv += ["--prompt", "hi"]
        if rng.random() < 0.3:
            argv.append("--json")
        yield f"random argv #{k}: {' '.join(a[:20] for a in argv[6:])}", argv


def test_cli(tiny_pair, capsys):
    from app.cli import main

    counts = COUNTS.setdefault("CLI", Counter())
    for case, argv in cli_cases(tiny_pair):
        try:
            with deadline(60, case):
                code = main(list(argv))
        except SystemExit as e:  # argparse: usage error, exit 2, one usage message
            code = e.code
            assert code in (0, 2), (case, code)
        except Exception as e:  # noqa: BLE001
            pytest.fail(f"CLI {case!r} raised {type(e).__name__}: {e}")
        out, err = capsys.readouterr()
        assert "Traceback" not in err and "Internal error" not in err + out, (case, err)
        if code == 0:
            counts["answer"] += 1
        else:
            assert code in (1, 2), (case, code)
            lines = [x for x in err.strip().splitlines() if x.startswith("canopy:")]
            assert lines or "error:" in err, (case, err)  # ours, or argparse's one line
            counts["clear error"] += 1
        if "--json" in argv and code == 0:
            json.loads(out)
    assert counts["answer"] >= 10 and counts["clear error"] >= 10


def test_cli_non_utf8_path_in_a_real_process():
    """Undecodable argv bytes (surrogate-escaped) reach the message, not a UnicodeError."""
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    r = subprocess.run([sys.executable, "-m", "app.cli", "generate", "--target",
                        os.fsdecode(b"/tmp/\xff\xfe-model"), "--prompt", "x"], cwd=root,
                       capture_output=True, timeout=120,
                       env={**os.environ, "PYTHONPATH": str(root)})
    assert r.returncode == 2 and b"Traceback" not in r.stderr
    assert r.stderr.decode("utf-8", "replace").count("canopy:") == 1
    COUNTS.setdefault("CLI", Counter())["clear error"] += 1
