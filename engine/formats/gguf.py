"""Convert a llama or qwen2 GGUF file into a model folder (mlx-lm / Hugging Face layout).

The file is read with gguf-py (`gguf.GGUFReader`, memory-mapped) and every tensor is
dequantized with llama.cpp's reference code (`gguf.quants.dequantize`: F32/F16/BF16, Q4_0,
Q4_1, Q5_0, Q5_1, Q8_0 and the K-quants Q2_K..Q6_K), one tensor at a time, so a model larger
than memory converts shard by shard. `import_gguf` writes `config.json`, `model.safetensors`
(or shards plus an index) with Hugging Face tensor names, `tokenizer.json` and
`tokenizer_config.json`. llama.cpp stores a llama's Q and K projections with rows permuted per
head (for its interleaved RoPE); the import undoes that. qwen2 files are not permuted.

`dtype=None` keeps Q4_0 / Q4_1 / Q8_0 weights quantized: MLX's own GGUF loader unpacks exactly
those into its affine triples (weight/scales/biases, group size 32).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import mlx.core as mx
import numpy as np

from ..errors import ModelError
from ..events import LoadProgress
from .gguf_tokenizer import build_tokenizer
from .modeldir import publish, save_model_dir, staged, staging_dir

__all__ = ["import_gguf", "scan_gguf", "publish", "save_model_dir", "staging_dir"]

FLOAT_TYPES = ("F32", "F16", "BF16")
SUPPORTED_TYPES = FLOAT_TYPES + ("Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K",
                                 "Q5_K", "Q6_K")
MLX_QUANTIZED = FLOAT_TYPES + ("Q4_0", "Q4_1", "Q8_0")  # what `dtype=None` can keep quantized
ARCHITECTURES = {"llama": ("llama", "LlamaForCausalLM"), "qwen2": ("qwen2", "Qwen2ForCausalLM")}
GROUP_SIZE = 32  # every GGML block type MLX unpacks has 32 values per block
DTYPES = {"float32": mx.float32, "float16": mx.float16, "bfloat16": mx.bfloat16}
CHUNK_VALUES = 1 << 24  # dequantize big tensors in row chunks of about this many values

_TOP = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}
_LAYER = {
    "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_SKIP = ("rope_freqs", "attn_rot_embd")  # rope_freqs becomes config["rope_scaling"]

Progress = Callable[[LoadProgress], None] | None


class PendingTensor(NamedTuple):
    """A tensor computed when written (see `save_model_dir`); shape and nbytes known before."""

    shape: tuple[int, ...]
    nbytes: int
    load: Callable[[], mx.array]


def _corrupt(path: Path, detail: str) -> ModelError:
    return ModelError(
        f"{path} is truncated or corrupt ({detail}). It is probably an incomplete download: "
        "download the file again."
    )


def _open(path: Path):
    """A `gguf.GGUFReader` on `path`, every failure turned into one readable ModelError."""
    import gguf

    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except FileNotFoundError as e:
        raise ModelError(f"GGUF file not found: {path}. Check the path.") from e
    except IsADirectoryError as e:
        raise ModelError(f"{path} is a folder, not a .gguf file. Give the GGUF file.") from e
    except OSError as e:
        raise ModelError(f"Cannot read {path}: {e.strerror or e}. Check the file's "
                         "permissions.") from e
    if magic != b"GGUF":
        raise ModelError(f"{path} is not a GGUF file (no GGUF magic). Give a .gguf model file.")
    try:
        return gguf.GGUFReader(str(path))
    except Exception as e:  # gguf-py raises ValueError/IndexError/KeyError on a bad file
        raise _corrupt(path, f"bad header: {type(e).__name__}: {e}") from e


def _metadata(reader) -> dict:
    meta = {}
    for name, field in reader.fields.items():
        if name.startswith("GGUF."):
            continue
        try:
            meta[name] = field.contents()
        except (UnicodeDecodeError, IndexError, ValueError):
            meta[name] = None
    return meta


def scan_gguf(path: str | Path) -> tuple[dict, dict[str, str]]:
    """Read a GGUF's header: (metadata {key: value}, {tensor name: GGML type name})."""
    reader = _open(Path(path))
    return _metadata(reader), {t.name: t.tensor_type.name for t in reader.tensors}


def _dequantized(t, dtype) -> PendingTensor:
    """A reader tensor as `dtype`, dequantized by gguf-py in row chunks when it is written."""
    from gguf.quants import dequantize

    shape = tuple(int(d) for d in reversed(t.shape.tolist()))

    def load() -> mx.array:
        data = t.data.reshape(-1, t.data.shape[-1]) if t.data.ndim > 1 else t.data[None]
        rows = max(1, CHUNK_VALUES // max(1, int(shape[-1])))
        out = np.empty((data.shape[0], int(shape[-1])), np.float32)
        for i in range(0, data.shape[0], rows):
            out[i : i + rows] = dequantize(np.asarray(data[i : i + rows]), t.tensor_type)
        return mx.array(out.reshape(shape)).astype(dtype)

    return PendingTensor(shape, int(np.prod(shape)) * dtype.size, load)


def _hf_module(base: str) -> str | None:
    if base in _TOP:
        return _TOP[base]
    parts = base.split(".")
    if len(parts) == 3 and parts[0] == "blk" and parts[1].isdigit() and parts[2] in _LAYER:
        return f"model.layers.{parts[1]}.{_LAYER[parts[2]]}"
    return None


def _order(module: str) -> tuple:
    parts = module.split(".")
    if module == "model.embed_tokens":
        return (0, 0, module)
    if parts[:2] == ["model", "layers"]:
        return (1, int(parts[2]), module)
    return (2, 0, module)


def _unpermute(x, n_head: int):
    """Undo llama.cpp's per-head row permutation of Q/K (rows of weight, scales or biases)."""
    rows = x.shape[0]
    y = x.reshape(n_head, rows // n_head // 2, 2, *x.shape[1:]).swapaxes(1, 2)
    return y.reshape(x.shape)


def _llama3_rope(freqs: np.ndarray, theta: float, head_dim: int, path: Path) -> dict:
    """Recover Llama 3's rope_scaling from llama.cpp's `rope_freqs` tensor (its default params)."""
    factor, low, high, old = float(freqs.max()), 1.0, 4.0, 8192
    inv = 1.0 / theta ** (np.arange(0, head_dim, 2) / head_dim)
    wavelen = 2 * math.pi / inv
    smooth = (old / wavelen - low) / (high - low)
    expect = np.where(wavelen < old / high, 1.0,
                      np.where(wavelen > old / low, factor, 1 / ((1 - smooth) / factor + smooth)))
    if freqs.shape != expect.shape or not np.allclose(freqs, expect, rtol=1e-3):
        raise ModelError(f"{path}: its RoPE frequency table (rope_freqs) is not Llama 3's; this "
                         "RoPE scaling is not supported. Use the model's Hugging Face folder.")
    return {"rope_type": "llama3", "factor": factor, "low_freq_factor": low,
            "high_freq_factor": high, "original_max_position_embeddings": old}


def _f32(v) -> float:
    """A GGUF float32 as the short decimal it was written from (1e-05, not 9.9999997e-06)."""
    return float(str(np.float32(v)))


def _config(meta: dict, shapes: dict, rope_freqs, path: Path) -> dict:
    arch = meta["general.architecture"]

    def get(key: str, default=None):
        v = meta.get(f"{arch}.{key}", default)
        if v is None:
            raise ModelError(f"{path}: the GGUF lacks {arch}.{key}. The file is incomplete or "
                             f"not a plain {arch} model.")
        return v

    d, nh = int(get("embedding_length")), int(get("attention.head_count"))
    head_dim = int(get("attention.key_length", d // nh))
    if int(get("rope.dimension_count", head_dim)) != head_dim:
        raise ModelError(f"{path}: RoPE on part of each head is not supported.")
    if "token_embd.weight" not in shapes:
        raise _corrupt(path, "no token_embd tensor")
    model_type, architecture = ARCHITECTURES[arch]
    config = {
        "model_type": model_type,
        "architectures": [architecture],
        "hidden_size": d,
        "num_hidden_layers": int(get("block_count")),
        "intermediate_size": int(get("feed_forward_length")),
        "num_attention_heads": nh,
        "num_key_value_heads": int(get("attention.head_count_kv", nh)),
        "head_dim": head_dim,
        "rms_norm_eps": _f32(get("attention.layer_norm_rms_epsilon")),
        "rope_theta": _f32(get("rope.freq_base", 10000.0)),
        "vocab_size": int(shapes["token_embd.weight"][0]),
        "max_position_embeddings": int(get("context_length", 2048)),
        "tie_word_embeddings": "output.weight" not in shapes,
    }
    if arch == "qwen2":
        config["qkv_bias"] = "blk.0.attn_q.bias" in shapes
    scaling = meta.get(f"{arch}.rope.scaling.type")
    if scaling == "linear":
        config["rope_scaling"] = {"type": "linear", "factor": float(get("rope.scaling.factor"))}
    elif scaling not in (None, "none"):
        raise ModelError(f"{path}: RoPE scaling {scaling!r} is not supported. Use the model's "
                         "Hugging Face folder.")
    if rope_freqs is not None:
        config["rope_scaling"] = _llama3_rope(rope_freqs, config["rope_theta"], head_dim, path)
    for key, ggml in (("bos_token_id", "bos"), ("eos_token_id", "eos"),
                      ("pad_token_id", "padding")):
        if (v := meta.get(f"tokenizer.ggml.{ggml}_token_id")) is not None:
            config[key] = int(v)
    return config


def _group(weights: dict, path: Path) -> dict[str, dict]:
    """{HF module: {"weight"|"bias"|"scales"|"biases": array}}, skipping tables we fold away."""
    groups: dict[str, dict] = {}
    for name, arr in weights.items():
        base, _, part = name.rpartition(".")
        if base in _SKIP:
            continue
        module = _hf_module(base)
        if module is None or part not in ("weight", "bias", "scales", "biases"):
            raise ModelError(f"{path}: unexpected tensor {name!r}; only plain llama and qwen2 "
                             "models (no mixture-of-experts) can be imported.")
        groups.setdefault(module, {})[part] = arr
    return groups


def _convert(weights: dict, config: dict, dtype, path: Path) -> tuple[dict, dict[str, int]]:
    """HF-named tensors in layer order, and the bit width of each still-quantized module.

    `dtype` set: `weights` are PendingTensors; None: MLX arrays from `mx.load` (quantized kept).
    """
    groups = _group(weights, path)
    heads = {}
    if config["model_type"] == "llama":
        heads = {"q_proj": config["num_attention_heads"], "k_proj": config["num_key_value_heads"]}
    out: dict = {}
    bits: dict[str, int] = {}
    for module in sorted(groups, key=_order):
        parts = groups[module]
        n_head = heads.get(module.rsplit(".", 1)[-1])
        if "weight" not in parts or ("scales" in parts) != ("biases" in parts):
            raise _corrupt(path, f"incomplete tensor group for {module}")
        if dtype is not None:
            for part, t in parts.items():
                if n_head:
                    t = PendingTensor(t.shape, t.nbytes,
                                      lambda load=t.load, n=n_head: _unpermute(load(), n))
                out[f"{module}.{part}"] = t
            continue
        if n_head:
            parts = {k: _unpermute(v, n_head) for k, v in parts.items()}
        w = parts["weight"]
        if "scales" in parts:
            out.update({f"{module}.weight": w, f"{module}.scales": parts["scales"],
                        f"{module}.biases": parts["biases"]})
            bits[module] = w.shape[-1] // parts["scales"].shape[-1]
        else:
            out[f"{module}.weight"] = w
        if "bias" in parts:
            out[f"{module}.bias"] = parts["bias"]
    return out, bits


def _quant_config(bits: dict[str, int]) -> dict | None:
    if not bits:
        return None
    common = Counter(bits.values()).most_common(1)[0][0]
    q: dict = {"group_size": GROUP_SIZE, "bits": common}
    for module, b in bits.items():
        if b != common:
            q[module] = {"group_size": GROUP_SIZE, "bits": b}
    return q


def _read_quantized(path: Path) -> dict[str, mx.array]:
    try:
        return mx.load(str(path), format="gguf")
    except Exception as e:  # MLX raises RuntimeError with C++ text
        raise _corrupt(path, str(e).removeprefix("[load_gguf] ")) from e


def import_gguf(gguf_path: str | Path, out_dir: str | Path, *, dtype: str | None = "float32",
                progress: Progress = None, overwrite: bool = False) -> Path:
    """Convert a llama or qwen2 GGUF into a model folder at `out_dir` and return its path.

    Args:
        dtype: "float32", "float16" or "bfloat16" dequantizes every weight to that type; None
            keeps Q4_0/Q4_1/Q8_0 tensors as MLX affine quantized weights (config
            "quantization", with per-module entries where bit widths differ).
        overwrite: replace an existing non-empty `out_dir` (otherwise that is an error).
    """
    path, out = Path(gguf_path).expanduser(), Path(out_dir).expanduser()
    if dtype is not None and dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)} or None, not {dtype!r}")
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise ModelError(f"{out} already exists and is not empty. Remove it or choose another "
                         "output folder.")
    if progress:
        progress(LoadProgress(f"reading {path.name}", 0, 1))
    reader = _open(path)
    meta = _metadata(reader)
    arch = meta.get("general.architecture")
    if arch not in ARCHITECTURES:
        raise ModelError(f"{path} is a {arch!r} model; only llama-architecture (Llama, SmolLM, "
                         "Mistral-style) and qwen2 (Qwen2, Qwen2.5) GGUF files can be imported.")
    types = {t.name: t.tensor_type.name for t in reader.tensors}
    allowed = SUPPORTED_TYPES if dtype is not None else MLX_QUANTIZED
    bad = sorted({t for t in types.values() if t not in allowed})
    if bad:
        hint = (f"Use a {', '.join(allowed)} GGUF of this model" if dtype is not None else
                "Import it with a float dtype (e.g. float32) instead")
        raise ModelError(f"{path} has tensors of type {', '.join(bad)}, which cannot be "
                         f"imported{' kept quantized' if dtype is None else ''}. {hint}.")
    shapes = {t.name: tuple(int(d) for d in reversed(t.shape.tolist())) for t in reader.tensors}
    rope_freqs = None
    if "rope_freqs.weight" in shapes:
        rope_freqs = np.asarray(next(t.data for t in reader.tensors
                                     if t.name == "rope_freqs.weight"), np.float32)
    config = _config(meta, shapes, rope_freqs, path)
    if dtype is None:
        weights = _read_quantized(path)
    else:
        weights = {t.name: _dequantized(t, DTYPES[dtype]) for t in reader.tensors}
    if progress:
        progress(LoadProgress(f"reading {path.name}", 1, 1))
    arrays, bits = _convert(weights, config, None if dtype is None else DTYPES[dtype], path)
    if (q := _quant_config(bits)) is not None:
        config["quantization"] = q
        config["quantization_config"] = q
    if dtype is not None:
        config["torch_dtype"] = dtype
    tokenizer, tok_config = build_tokenizer(meta, path, config["max_position_embeddings"])
    if tokenizer.get_vocab_size() > config["vocab_size"]:
        raise _corrupt(path, "more tokens than embedding rows")

    from .loader import build_shell

    build_shell(config, dict(arrays), path)  # names and shapes, before writing anything
    out.parent.mkdir(parents=True, exist_ok=True)
    with staged(out) as tmp:
        (tmp / "config.json").write_text(json.dumps(config, indent=1))
        tokenizer.save(str(tmp / "tokenizer.json"))
        (tmp / "tokenizer_config.json").write_text(json.dumps(tok_config, indent=1))
        del weights
        save_model_dir(tmp, arrays, progress, f"converting {path.name}")
    return out
