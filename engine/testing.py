"""Tiny random models for tests, the packaged self-test and `canopy bench --quick`.

Each is a real model directory (config.json, safetensors, tokenizer.json with a ChatML
template), built in milliseconds and deterministic given the seed. No downloads.
"""

from __future__ import annotations

import json
from pathlib import Path

import mlx.core as mx
import numpy as np

CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def _byte_level_alphabet() -> list[str]:
    """GPT-2's byte -> printable unicode map, as a list indexed by byte."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    table = dict(zip(bs, cs))
    return [chr(table[b]) for b in range(256)]


def write_tokenizer(out_dir: Path, merges: int = 64) -> int:
    """Write a byte-level BPE tokenizer (+ ChatML specials); returns its vocabulary size."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    alphabet = _byte_level_alphabet()
    vocab = {ch: i for i, ch in enumerate(alphabet)}
    merge_list = []
    # A few deterministic merges of common English pairs, so text is not one token per byte.
    for pair in ["Ġt", "he", "Ġa", "in", "er", "Ġs", "on", "re", "an", "Ġthe", "at", "en"][:merges]:
        a, b = (pair[:-1], pair[-1]) if pair != "Ġthe" else ("Ġt", "he")
        if a in vocab and b in vocab and pair not in vocab:
            vocab[pair] = len(vocab)
            merge_list.append((a, b))
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merge_list))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(SPECIAL_TOKENS)
    tok.save(str(out_dir / "tokenizer.json"))
    (out_dir / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "PreTrainedTokenizerFast",
                "chat_template": CHATML,
                "eos_token": "<|im_end|>",
                "bos_token": None,
                "pad_token": "<|endoftext|>",
                "model_max_length": 2048,
            }
        )
    )
    return tok.get_vocab_size()


def random_weights(config: dict, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    d, f, v = config["hidden_size"], config["intermediate_size"], config["vocab_size"]
    hd = d // config["num_attention_heads"]
    kv = config["num_key_value_heads"] * hd

    def lin(o, i):
        return (rng.standard_normal((o, i)) / np.sqrt(i)).astype(np.float32)

    w = {"model.embed_tokens.weight": rng.standard_normal((v, d)).astype(np.float32)}
    for n in range(config["num_hidden_layers"]):
        p = f"model.layers.{n}."
        w[p + "self_attn.q_proj.weight"] = lin(d, d)
        w[p + "self_attn.k_proj.weight"] = lin(kv, d)
        w[p + "self_attn.v_proj.weight"] = lin(kv, d)
        w[p + "self_attn.o_proj.weight"] = lin(d, d)
        if config["model_type"] == "qwen2":
            for name, size in (("q", d), ("k", kv), ("v", kv)):
                w[p + f"self_attn.{name}_proj.bias"] = (0.1 * rng.standard_normal(size)).astype(
                    np.float32
                )
        w[p + "mlp.gate_proj.weight"] = lin(f, d)
        w[p + "mlp.up_proj.weight"] = lin(f, d)
        w[p + "mlp.down_proj.weight"] = lin(d, f)
        w[p + "input_layernorm.weight"] = np.ones(d, np.float32)
        w[p + "post_attention_layernorm.weight"] = np.ones(d, np.float32)
    w["model.norm.weight"] = np.ones(d, np.float32)
    if not config.get("tie_word_embeddings", True):
        w["lm_head.weight"] = lin(v, d) * 3  # moderately peaked next-token distributions
    return w


def save_weights(out_dir: Path, weights: dict, shards: int = 1) -> None:
    """Write safetensors; with shards > 1 the split is by tensor count, so layers straddle files."""
    arrays = {k: mx.array(v) if isinstance(v, np.ndarray) else v for k, v in weights.items()}
    names = sorted(arrays)
    if shards <= 1:
        mx.save_safetensors(str(out_dir / "model.safetensors"), arrays, metadata={"format": "mlx"})
        return
    weight_map = {}
    for s, chunk in enumerate(np.array_split(np.array(names, dtype=object), shards)):
        fname = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        mx.save_safetensors(
            str(out_dir / fname), {k: arrays[k] for k in chunk}, metadata={"format": "mlx"}
        )
        weight_map.update({k: fname for k in chunk})
    index = {"metadata": {}, "weight_map": weight_map}
    (out_dir / "model.safetensors.index.json").write_text(json.dumps(index, indent=1))


def resize_vocab(weights: dict[str, np.ndarray], rows: int) -> dict[str, np.ndarray]:
    """Cut or zero-pad the vocabulary rows of the embedding and the LM head to `rows`."""
    out = dict(weights)
    for name in ("model.embed_tokens.weight", "lm_head.weight"):
        if name in out:
            w = out[name][:rows]
            pad = np.zeros((rows - len(w), w.shape[1]), w.dtype)
            out[name] = np.concatenate([w, pad]) if len(pad) else w
    return out


def make_tiny_model(
    out_dir: str | Path,
    *,
    seed: int = 0,
    model_type: str = "llama",
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    intermediate_size: int = 128,
    vocab_padding: int | None = None,
    tie_word_embeddings: bool = False,
    shards: int = 1,
    like: str | Path | None = None,
    noise: float = 0.0,
    bigram: bool = False,
) -> Path:
    """Build a tiny random model directory and return its path.

    `vocab_padding`: embedding/head rows beyond the tokenizer's vocabulary (as Qwen pads its
    models; default 0). With `like`, copy that model's config and weights and add Gaussian `noise`
    (relative to each tensor's scale): a draft that mostly agrees with its target; a given
    `vocab_padding` then resizes the copy's vocabulary (rows cut, or zero rows added). With
    `bigram`, attention outputs are zero, so the next token depends on the current token alone:
    its greedy text after a token repeats what followed that token before (a deterministic copier).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    n_vocab = write_tokenizer(out)
    if like is not None:
        like = Path(like)
        config = json.loads((like / "config.json").read_text())
        from .formats.loader import read_weights, weight_files

        base = {k: np.array(v) for k, v in read_weights(weight_files(like)).items()}
        rng = np.random.default_rng(seed)
        weights = {
            k: (v + noise * v.std() * rng.standard_normal(v.shape)).astype(np.float32)
            if v.ndim > 1
            else v
            for k, v in base.items()
        }
        if vocab_padding is not None:
            config["vocab_size"] = n_vocab + vocab_padding
            weights = resize_vocab(weights, config["vocab_size"])
    else:
        config = {
            "model_type": model_type,
            "architectures": ["Qwen2ForCausalLM" if model_type == "qwen2" else "LlamaForCausalLM"],
            "hidden_size": hidden_size,
            "num_hidden_layers": num_layers,
            "intermediate_size": intermediate_size,
            "num_attention_heads": num_heads,
            "num_key_value_heads": num_kv_heads,
            "rms_norm_eps": 1e-5,
            "vocab_size": n_vocab + (vocab_padding or 0),
            "max_position_embeddings": 2048,
            "rope_theta": 10000.0,
            "tie_word_embeddings": tie_word_embeddings,
            "torch_dtype": "float32",
        }
        weights = random_weights(config, seed)
    if bigram:
        weights = {k: np.zeros_like(v) if k.endswith("o_proj.weight") else v
                   for k, v in weights.items()}
    (out / "config.json").write_text(json.dumps(config, indent=1))
    save_weights(out, weights, shards)
    return out
