"""GGUF import of qwen2 files and of every block type, checked against gguf-py's reference
dequantization (the code llama.cpp's own tools use)."""

from __future__ import annotations

import json

import mlx.core as mx
import numpy as np
import pytest

from engine.errors import ModelError
from engine.formats.gguf import import_gguf
from engine.formats.loader import load_model, read_weights, weight_files
from engine.testing import make_tiny_model
from tests.engine.gguf_names import add_vocabulary, gguf_name

gguf = pytest.importorskip("gguf")
T = gguf.GGMLQuantizationType

# Byte offsets of the float16 super-block scales in each K-quant block (ggml-common.h).
K_SCALES = {T.Q2_K: (80, 82), T.Q3_K: (108,), T.Q4_K: (0, 2), T.Q5_K: (0, 2), T.Q6_K: (208,)}
TEXT = "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)  # 2024 ünïcode"


def k_quant_bytes(rows: int, cols: int, qtype, rng) -> np.ndarray:
    """Random but valid K-quant rows: random codes, small finite super-block scales."""
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    data = rng.integers(0, 256, (rows, cols // block, size), dtype=np.uint8)
    for off in K_SCALES[qtype]:
        scale = rng.uniform(2e-4, 2e-3, (rows, cols // block)).astype(np.float16)
        data[..., off : off + 2] = scale.view(np.uint8).reshape(rows, cols // block, 2)
    return data.reshape(rows, -1)


def write_qwen2_gguf(model_dir, out, qtypes=None, seed=0):
    """Write `model_dir` (a qwen2 with q/k/v biases) as llama.cpp's converter would.

    `qtypes` maps a 2-D weight's HF name to its block type. Returns {HF name: the float32 values
    gguf-py dequantizes from the file}.
    """
    cfg = json.loads((model_dir / "config.json").read_text())
    tok = json.loads((model_dir / "tokenizer.json").read_text())
    weights = {k: np.array(v) for k, v in read_weights(weight_files(model_dir)).items()}
    rng = np.random.default_rng(seed)
    w = gguf.GGUFWriter(str(out), "qwen2")
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_context_length(4096)
    w.add_embedding_length(cfg["hidden_size"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(cfg["num_attention_heads"])
    w.add_head_count_kv(cfg["num_key_value_heads"])
    w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    w.add_rope_freq_base(cfg["rope_theta"])
    added = add_vocabulary(w, tok, cfg["vocab_size"], "qwen2", "[PAD")
    w.add_bos_token_id(added["<|endoftext|>"])
    w.add_eos_token_id(added["<|im_end|>"])
    w.add_pad_token_id(added["<|endoftext|>"])
    w.add_add_bos_token(False)
    w.add_chat_template("{% for m in messages %}<|im_start|>{{ m['content'] }}{% endfor %}")
    expected = {}
    for hf, x in weights.items():
        qt = (qtypes or {}).get(hf)
        if qt is None:
            w.add_tensor(gguf_name(hf), x.astype(np.float32))
            expected[hf] = x.astype(np.float32)
            continue
        if qt in K_SCALES:
            data = k_quant_bytes(*x.shape, qt, rng)
        else:
            data = gguf.quants.quantize(x.astype(np.float32), qt)
        w.add_tensor(gguf_name(hf), data, raw_dtype=qt)
        expected[hf] = gguf.quants.dequantize(data, qt).reshape(x.shape)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return expected


@pytest.fixture(scope="module")
def qwen(tmp_path_factory):
    """A tiny qwen2 whose rows are one K-quant super-block (256) wide, untied head."""
    return make_tiny_model(tmp_path_factory.mktemp("qwen") / "src", seed=4, model_type="qwen2",
                           hidden_size=256, intermediate_size=256, num_heads=4, num_kv_heads=2)


def run(model_dir, tokens):
    m = load_model(model_dir)
    return np.array(m.model(mx.array([tokens])).astype(mx.float32))[0], m


def test_qwen2_f32_matches_source_with_biases_and_tokenizer(qwen, tmp_path):
    write_qwen2_gguf(qwen, tmp_path / "q.gguf")
    out = import_gguf(tmp_path / "q.gguf", tmp_path / "out")
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model_type"] == "qwen2" and cfg["qkv_bias"] is True
    assert cfg["tie_word_embeddings"] is False
    src_w = read_weights(weight_files(qwen))
    assert any(k.endswith("q_proj.bias") for k in src_w)
    ws = read_weights(weight_files(out))
    for name in src_w:  # biases present, Q/K rows not permuted
        assert mx.array_equal(ws[name], src_w[name]), name
    got, m = run(out, list(range(3, 40)))
    want, src = run(qwen, list(range(3, 40)))
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)
    tok = m.tokenizer
    ids = tok.encode(TEXT)
    assert tok.decode(ids) == TEXT
    digits = [tok.decode([i]) for i in tok.encode("x = 2024")]
    assert digits[-4:] == ["2", "0", "2", "4"]  # qwen2 splits numbers into single digits
    chat = "<|im_start|>user\nhi<|im_end|>"
    ids = tok.encode(chat)
    assert ids[0] == src.tokenizer.convert_tokens_to_ids("<|im_start|>")
    assert src.tokenizer.convert_tokens_to_ids("<|im_end|>") in ids and tok.decode(ids) == chat
    assert tok.eos_token_ids == {src.tokenizer.convert_tokens_to_ids("<|im_end|>")}
    tc = json.loads((out / "tokenizer_config.json").read_text())
    assert tc["pad_token"] == "<|endoftext|>" and tc["eos_token"] == "<|im_end|>"
    assert tc["chat_template"].startswith("{% for m in messages %}")
    assert cfg["eos_token_id"] == src.tokenizer.convert_tokens_to_ids("<|im_end|>")


@pytest.mark.parametrize("qtype", [T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K, T.Q5_0, T.Q5_1,
                                   T.Q4_0, T.Q4_1, T.Q8_0])
def test_every_block_type_dequantizes_like_gguf_py(qwen, tmp_path, qtype):
    names = [k for k, v in read_weights(weight_files(qwen)).items() if v.ndim == 2]
    qtypes = {n: qtype for n in names}
    qtypes["model.embed_tokens.weight"] = T.Q8_0  # like the real files: a different type
    expected = write_qwen2_gguf(qwen, tmp_path / "q.gguf", qtypes)
    out = import_gguf(tmp_path / "q.gguf", tmp_path / "out")
    ws = read_weights(weight_files(out))
    assert set(ws) == set(expected)
    for name, x in expected.items():
        np.testing.assert_allclose(np.array(ws[name]), x, atol=1e-6, rtol=0, err_msg=name)
    got, _ = run(out, [5, 9, 40, 41])
    assert np.isfinite(got).all()


def test_k_quants_cannot_stay_quantized_but_bfloat16_works(qwen, tmp_path):
    expected = write_qwen2_gguf(qwen, tmp_path / "q.gguf",
                                {"model.layers.0.mlp.up_proj.weight": T.Q4_K})
    with pytest.raises(ModelError, match="Q4_K, which cannot be imported kept quantized"):
        import_gguf(tmp_path / "q.gguf", tmp_path / "keep", dtype=None)
    assert not (tmp_path / "keep").exists()
    out = import_gguf(tmp_path / "q.gguf", tmp_path / "bf16", dtype="bfloat16")
    ws = read_weights(weight_files(out))
    name = "model.layers.0.mlp.up_proj.weight"
    assert ws[name].dtype == mx.bfloat16
    want = np.array(mx.array(expected[name]).astype(mx.bfloat16).astype(mx.float32))
    np.testing.assert_array_equal(np.array(ws[name].astype(mx.float32)), want)


def test_tied_qwen2_head(tmp_path):
    src = make_tiny_model(tmp_path / "src", seed=6, model_type="qwen2", tie_word_embeddings=True)
    write_qwen2_gguf(src, tmp_path / "q.gguf")
    out = import_gguf(tmp_path / "q.gguf", tmp_path / "out")
    assert json.loads((out / "config.json").read_text())["tie_word_embeddings"] is True
    assert "lm_head.weight" not in read_weights(weight_files(out))
    np.testing.assert_allclose(run(out, [3, 4, 5])[0], run(src, [3, 4, 5])[0], atol=1e-4)
