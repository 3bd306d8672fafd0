"""GGUF import: a tiny llama written as llama.cpp would write it must import to the same model."""

from __future__ import annotations

import json
import math

import mlx.core as mx
import numpy as np
import pytest

from engine.errors import ModelError
from engine.formats.gguf import import_gguf, scan_gguf
from engine.formats.loader import load_model, read_weights, weight_files
from engine.testing import make_tiny_model
from tests.engine.gguf_names import add_vocabulary, gguf_name

gguf = pytest.importorskip("gguf")
T = gguf.GGMLQuantizationType

TOKENS = [8, 1, 3, 40, 41, 42, 100, 7, 9, 200, 201, 2, 5]


def permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp convert_hf_to_gguf.py's LlamaModel.permute."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(
        w.shape)


def write_gguf(model_dir, out, *, qtype=None, embed_qtype=None, arch="llama", extra=None):
    """Write `model_dir` as a GGUF the way llama.cpp's converter does (Q/K rows permuted).

    `qtype` quantizes the 2-D projection weights, `embed_qtype` the embedding; norms stay F32.
    Returns {hf name: the float32 weights llama.cpp would compute from the file (HF order)}.
    """
    cfg = json.loads((model_dir / "config.json").read_text())
    tok = json.loads((model_dir / "tokenizer.json").read_text())
    weights = {k: np.array(v) for k, v in read_weights(weight_files(model_dir)).items()}
    w = gguf.GGUFWriter(str(out), arch)
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(cfg["hidden_size"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(cfg["num_attention_heads"])
    w.add_head_count_kv(cfg["num_key_value_heads"])
    w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    w.add_rope_freq_base(cfg["rope_theta"])
    w.add_rope_dimension_count(cfg["hidden_size"] // cfg["num_attention_heads"])
    added = add_vocabulary(w, tok, cfg["vocab_size"], "smollm", "<pad")
    w.add_bos_token_id(added["<|im_start|>"])
    w.add_eos_token_id(added["<|im_end|>"])
    w.add_chat_template("{{ messages[0]['content'] }}")
    heads = {"q_proj": cfg["num_attention_heads"], "k_proj": cfg["num_key_value_heads"]}
    expected = {}
    for hf, x in weights.items():
        x = x.astype(np.float32)
        n_head = heads.get(hf.split(".")[-2])
        g = permute(x, n_head) if n_head else x
        qt = embed_qtype if "embed_tokens" in hf else qtype if x.ndim == 2 else None
        if qt is None:
            w.add_tensor(gguf_name(hf), g)
            expected[hf] = x
        else:
            data = gguf.quants.quantize(g, qt)
            w.add_tensor(gguf_name(hf), data, raw_dtype=qt)
            deq = gguf.quants.dequantize(data, qt).reshape(x.shape)
            expected[hf] = permute_back(deq, n_head) if n_head else deq
    for name, x in (extra or {}).items():
        w.add_tensor(name, x)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return expected


def permute_back(w, n_head):
    return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(
        w.shape)


def logits(model_dir, tokens=TOKENS):
    m = load_model(model_dir)
    return np.array(m.model(mx.array([tokens])).astype(mx.float32))[0], m


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("tiny") / "src", seed=3)


def test_f32_gguf_matches_source_model(tiny, tmp_path):
    write_gguf(tiny, tmp_path / "m.gguf")
    out = import_gguf(tmp_path / "m.gguf", tmp_path / "out")
    got, m = logits(out)
    want, src = logits(tiny)
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model_type"] == "llama" and cfg["tie_word_embeddings"] is False
    assert cfg["rms_norm_eps"] == 1e-5 and "quantization" not in cfg
    text = "the theater at 2024: <|im_start|>user hi<|im_end|>"
    assert m.tokenizer.encode(text) == src.tokenizer.encode(text)
    assert m.tokenizer.decode(m.tokenizer.encode(text)) == text
    assert m.tokenizer.eos_token_ids == {src.tokenizer.convert_tokens_to_ids("<|im_end|>")}
    tc = json.loads((out / "tokenizer_config.json").read_text())
    assert tc["tokenizer_class"] == "PreTrainedTokenizerFast" and tc["eos_token"] == "<|im_end|>"
    assert tc["chat_template"] == "{{ messages[0]['content'] }}"


def test_unpermute_direction_matters(tiny, tmp_path):
    """Not undoing (or re-applying) llama.cpp's permutation changes the logits a lot."""
    write_gguf(tiny, tmp_path / "m.gguf")
    out = import_gguf(tmp_path / "m.gguf", tmp_path / "out")
    ws = dict(mx.load(str(out / "model.safetensors")))
    src = dict(mx.load(str(tiny / "model.safetensors")))
    for name in ("model.layers.0.self_attn.q_proj.weight",
                 "model.layers.1.self_attn.k_proj.weight"):
        assert mx.array_equal(ws[name], src[name])
        assert not mx.array_equal(mx.array(permute(np.array(src[name]), 2)), src[name])


@pytest.mark.parametrize("qtype", [T.Q4_0, T.Q4_1, T.Q8_0])
def test_quantized_gguf(tiny, tmp_path, qtype):
    """Dequantized import equals llama.cpp's values; quantized import runs MLX's kernels on the
    same values; both stay near the float source model."""
    expected = write_gguf(tiny, tmp_path / "m.gguf", qtype=qtype, embed_qtype=T.Q8_0)
    full = import_gguf(tmp_path / "m.gguf", tmp_path / "f32", dtype="float32")
    ws = dict(mx.load(str(full / "model.safetensors")))
    for name, x in expected.items():
        np.testing.assert_allclose(np.array(ws[name]), x, atol=1e-6, err_msg=name)
    quant = import_gguf(tmp_path / "m.gguf", tmp_path / "q", dtype=None)
    cfg = json.loads((quant / "config.json").read_text())
    bits = 8 if qtype == T.Q8_0 else 4
    assert cfg["quantization"]["bits"] == bits and cfg["quantization"]["group_size"] == 32
    if bits == 4:
        assert cfg["quantization"]["model.embed_tokens"] == {"group_size": 32, "bits": 8}
    got_f, _ = logits(full)
    got_q, mq = logits(quant)
    want, _ = logits(tiny)
    assert type(mq.model.model.embed_tokens).__name__ == "QuantizedEmbedding"
    np.testing.assert_allclose(got_q, got_f, atol=2e-2, rtol=1e-2)
    tol = 0.05 if bits == 8 else 0.4
    assert np.abs(got_f - want).max() < tol * np.abs(want).max()
    agree = (got_q.argmax(-1) == want.argmax(-1)).mean()
    assert agree >= (1.0 if bits == 8 else 0.75)


def test_large_models_are_sharded(tiny, tmp_path, monkeypatch):
    import engine.formats.modeldir

    monkeypatch.setattr(engine.formats.modeldir, "SHARD_BYTES", 40_000)
    write_gguf(tiny, tmp_path / "m.gguf")
    out = import_gguf(tmp_path / "m.gguf", tmp_path / "out")
    assert len(list(out.glob("model-*-of-*.safetensors"))) > 2
    assert (out / "model.safetensors.index.json").exists()
    np.testing.assert_allclose(logits(out)[0], logits(tiny)[0], atol=1e-4, rtol=1e-4)


def test_tied_embeddings_and_float16(tmp_path):
    src = make_tiny_model(tmp_path / "src", seed=5, tie_word_embeddings=True)
    write_gguf(src, tmp_path / "m.gguf")
    out = import_gguf(tmp_path / "m.gguf", tmp_path / "out", dtype="float16")
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["tie_word_embeddings"] is True
    ws = mx.load(str(out / "model.safetensors"))
    assert "lm_head.weight" not in ws and all(v.dtype == mx.float16 for v in ws.values())
    got, _ = logits(out)
    want, _ = logits(src)
    np.testing.assert_allclose(got, want, atol=2e-2 * np.abs(want).max())


def test_llama3_rope_freqs_become_rope_scaling(tmp_path):
    src = make_tiny_model(tmp_path / "src", seed=1)
    cfg = json.loads((src / "config.json").read_text())
    hd, theta = cfg["hidden_size"] // cfg["num_attention_heads"], cfg["rope_theta"]
    scaling = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}
    (src / "config.json").write_text(json.dumps({**cfg, "rope_scaling": scaling}))
    factors = []  # llama.cpp's generate_extra_tensors for Llama 3
    for i in range(0, hd, 2):
        wavelen = 2 * math.pi * theta ** (i / hd)
        smooth = (8192 / wavelen - 1.0) / 3.0
        factors.append(1.0 if wavelen < 2048 else 8.0 if wavelen > 8192
                       else 1 / ((1 - smooth) / 8.0 + smooth))
    assert factors[0] == 1.0 and 1.0 < factors[-2] < 8.0 and factors[-1] == 8.0  # all 3 regimes
    write_gguf(src, tmp_path / "m.gguf", extra={"rope_freqs.weight": np.float32(factors)})
    out = import_gguf(tmp_path / "m.gguf", tmp_path / "out")
    assert json.loads((out / "config.json").read_text())["rope_scaling"] == scaling
    tokens = list(range(3, 60))
    np.testing.assert_allclose(logits(out, tokens)[0], logits(src, tokens)[0], atol=1e-4)


def test_truncated_gguf_is_a_model_error(tiny, tmp_path):
    write_gguf(tiny, tmp_path / "m.gguf")
    data = (tmp_path / "m.gguf").read_bytes()
    for cut in (len(data) - 1000, 2000, 10):
        bad = tmp_path / f"cut{cut}.gguf"
        bad.write_bytes(data[:cut])
        with pytest.raises(ModelError, match="truncated or corrupt"):
            import_gguf(bad, tmp_path / f"out{cut}")
        assert not (tmp_path / f"out{cut}").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_wrong_inputs_are_model_errors(tiny, tmp_path):
    write_gguf(tiny, tmp_path / "q.gguf", arch="gptneox")
    with pytest.raises(ModelError, match="'gptneox' model; only llama"):
        import_gguf(tmp_path / "q.gguf", tmp_path / "out")
    (tmp_path / "x.gguf").write_bytes(b"not a gguf at all, really")
    with pytest.raises(ModelError, match="not a GGUF file"):
        import_gguf(tmp_path / "x.gguf", tmp_path / "out")
    with pytest.raises(ModelError, match="not found"):
        import_gguf(tmp_path / "missing.gguf", tmp_path / "out")
    # A K-quant tensor cannot stay quantized (random bytes: the type check comes first).
    kq = np.random.default_rng(0).integers(0, 255, (4, 144), dtype=np.uint8)
    write_gguf(tiny, tmp_path / "k.gguf")
    w = gguf.GGUFWriter(str(tmp_path / "k2.gguf"), "llama")
    w.add_tensor("blk.0.attn_q.weight", kq, raw_dtype=T.Q4_K)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    assert scan_gguf(tmp_path / "k2.gguf")[1] == {"blk.0.attn_q.weight": "Q4_K"}
    with pytest.raises(ModelError, match="type Q4_K, which cannot be imported kept quantized"):
        import_gguf(tmp_path / "k2.gguf", tmp_path / "out", dtype=None)
    # An existing, non-empty output folder is kept unless overwrite=True.
    out = import_gguf(tmp_path / "k.gguf", tmp_path / "out")
    with pytest.raises(ModelError, match="already exists"):
        import_gguf(tmp_path / "k.gguf", out)
    assert import_gguf(tmp_path / "k.gguf", out, overwrite=True) == out
