"""Safetensors header index and coalesced layer reads."""

from __future__ import annotations

import json
import os
import struct

import mlx.core as mx
import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import save_file

from engine.errors import StreamingError
from engine.streaming import weights as W
from engine.streaming.weights import build_index, index_model, layer_of, plan_reads, read_tensors
from engine.testing import make_tiny_model


@pytest.fixture(scope="module", params=[1, 3], ids=["single", "sharded"])
def model_dir(request, tmp_path_factory):
    out = tmp_path_factory.mktemp(f"w{request.param}")
    return make_tiny_model(out, num_layers=4, shards=request.param)


def test_index_matches_safe_open(model_dir):
    index = index_model(model_dir)
    seen = set()
    for f in sorted(model_dir.glob("*.safetensors")):
        with safe_open(f, framework="numpy") as st:
            for name in st.keys():
                info = index.tensors[name]
                ref = st.get_tensor(name)
                assert info.file == f and info.shape == ref.shape and info.length == ref.nbytes
                with open(f, "rb") as fh:  # the offset points at exactly these bytes
                    fh.seek(info.offset)
                    assert fh.read(info.length) == ref.tobytes()
                seen.add(name)
    assert seen == set(index.tensors)
    got = read_tensors(index.tensors.values(), bypass_cache=False)
    for name, info in index.tensors.items():
        with safe_open(info.file, framework="numpy") as st:
            np.testing.assert_array_equal(np.array(got[name]), st.get_tensor(name))


def test_grouped_by_layer(model_dir):
    index = index_model(model_dir)
    assert len(index.layers) == 4
    for i, group in enumerate(index.layers):
        assert len(group) == 9 and all(layer_of(t.name) == i for t in group)
    assert {t.name for t in index.other} == {
        "model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"}
    assert layer_of("model.layers.12.mlp.up_proj.weight") == 12
    assert layer_of("model.norm.weight") is None


def test_reads_are_coalesced(model_dir, tmp_path):
    """One read per maximal contiguous byte range; one per layer when the file is sorted."""
    index = index_model(model_dir)
    for group in index.layers:
        runs = plan_reads(group)
        assert sum(r.length for r in runs) == sum(t.length for t in group)
        for r in runs:
            ends = [t.offset + t.length for t in r.tensors[:-1]]
            assert ends == [t.offset for t in r.tensors[1:]]
        for a, b in zip(runs, runs[1:], strict=False):
            assert a.file != b.file or a.offset + a.length != b.offset
    if len(index.stamps) > 1:
        assert any(len({t.file for t in g}) > 1 for g in index.layers)  # a layer straddles files
    # The safetensors library writes tensors sorted by name: then each layer is one read.
    arrays = {k: np.array(v) for k, v in read_tensors(index.tensors.values()).items()}
    save_file(arrays, str(tmp_path / "sorted.safetensors"))
    for group in build_index([tmp_path / "sorted.safetensors"]).layers:
        assert len(plan_reads(group)) == 1


def test_dtypes_and_misaligned_tensor(tmp_path):
    """bf16/f16/uint32 round-trip; a tensor at an offset not aligned to its dtype still reads."""
    arrays = {
        "a": mx.array(np.arange(6, dtype=np.float32).reshape(2, 3)).astype(mx.bfloat16),
        "b": mx.array(np.linspace(-1, 1, 10, dtype=np.float16)),
        "c": mx.array(np.arange(8, dtype=np.uint32) * 123456789),
    }
    f = tmp_path / "x.safetensors"
    mx.save_safetensors(str(f), arrays)
    got = read_tensors(build_index([f]).tensors.values())
    for k, v in arrays.items():
        assert got[k].dtype == v.dtype and mx.array_equal(got[k], v).item()
    # Hand-made file: 3 bytes of u8, then f32 at data offset 3.
    f32 = np.arange(5, dtype=np.float32) - 2.5
    header = {"u": {"dtype": "U8", "shape": [3], "data_offsets": [0, 3]},
              "f": {"dtype": "F32", "shape": [5], "data_offsets": [3, 23]}}
    raw = json.dumps(header).encode()
    g = tmp_path / "odd.safetensors"
    g.write_bytes(struct.pack("<Q", len(raw)) + raw + bytes([7, 8, 9]) + f32.tobytes())
    got = read_tensors(build_index([g]).tensors.values())
    np.testing.assert_array_equal(np.array(got["f"]), f32)
    assert np.array(got["u"]).tolist() == [7, 8, 9]


@pytest.mark.parametrize("damage", ["length", "json", "offsets", "tiny"])
def test_corrupt_header_names_the_file(tmp_path, damage):
    f = tmp_path / "bad.safetensors"
    mx.save_safetensors(str(f), {"w": mx.ones((4, 4))})
    data = bytearray(f.read_bytes())
    (n,) = struct.unpack("<Q", data[:8])
    if damage == "length":
        data[:8] = struct.pack("<Q", 10**12)
    elif damage == "json":
        data[8:12] = b"}}}}"
    elif damage == "offsets":
        data = data[:8] + json.dumps(
            {"w": {"dtype": "F32", "shape": [4, 4], "data_offsets": [0, 999]}}
        ).encode().ljust(n) + data[8 + n:]
    else:
        data = data[:5]
    f.write_bytes(bytes(data))
    with pytest.raises(StreamingError, match="bad.safetensors"):
        build_index([f])


def test_vanished_changed_and_short_files(tmp_path):
    d = make_tiny_model(tmp_path / "m", num_layers=2)
    index = index_model(d)
    f = d / "model.safetensors"
    group = index.layers[1]
    size = f.stat().st_size
    with open(f, "r+b") as fh:
        fh.truncate(size - 100)
    with pytest.raises(StreamingError, match="changed on disk"):
        read_tensors(group, stamps=index.stamps)
    with pytest.raises(StreamingError, match="Short read.*model.safetensors"):
        read_tensors(group)  # no stamps: the short read itself is caught
    f.unlink()
    with pytest.raises(StreamingError, match="vanished.*model.safetensors"):
        read_tensors(group, stamps=index.stamps)


def test_page_cache_bypass_is_requested(tmp_path, monkeypatch):
    if not hasattr(os, "posix_fadvise"):
        pytest.skip("posix_fadvise is Linux-only")
    calls = []
    real = os.posix_fadvise
    monkeypatch.setattr(os, "posix_fadvise",
                        lambda fd, o, n, a: (calls.append(a), real(fd, o, n, a)))
    d = make_tiny_model(tmp_path / "m", num_layers=1)
    group = index_model(d).layers[0]
    read_tensors(group, bypass_cache=False)
    assert os.POSIX_FADV_DONTNEED not in calls
    calls.clear()
    read_tensors(group)
    assert calls[-1] == os.POSIX_FADV_DONTNEED


def test_cancelled_read(tmp_path):
    d = make_tiny_model(tmp_path / "m", num_layers=1)
    with pytest.raises(W.ReadCancelled):
        read_tensors(index_model(d).layers[0], should_stop=lambda: True)
