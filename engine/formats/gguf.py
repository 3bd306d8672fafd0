"""Convert a llama-architecture GGUF file into a model folder (mlx-lm / Hugging Face layout).

`import_gguf` reads the file with `mx.load` (which unpacks Q4_0 / Q4_1 / Q8_0 into MLX affine
quantized triples weight/scales/biases, group size 32) and writes `config.json`,
`model.safetensors` (or shards plus an index) with Hugging Face tensor names, `tokenizer.json`
and `tokenizer_config.json`. llama.cpp stores the Q and K projections with their rows permuted
per head (for its interleaved RoPE); the import undoes that so the standard (non-traditional)
RoPE of the Hugging Face layout applies.

Other GGML types are refused: MLX 0.32 dequantizes K-quants to float16 itself, but its Q4_K
values disagree with llama.cpp's reference (`gguf.quants.dequantize`), so we do not trust them.
"""

from __future__ import annotations

import json
import math
import mmap
import os
import shutil
import struct
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import mlx.core as mx
import numpy as np

from ..errors import ModelError
from ..events import LoadProgress
from .gguf_tokenizer import build_tokenizer

GGML_TYPES = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 6: "Q5_0", 7: "Q5_1", 8: "Q8_0", 9: "Q8_1",
    10: "Q2_K", 11: "Q3_K", 12: "Q4_K", 13: "Q5_K", 14: "Q6_K", 15: "Q8_K", 16: "IQ2_XXS",
    17: "IQ2_XS", 18: "IQ3_XXS", 19: "IQ1_S", 20: "IQ4_NL", 21: "IQ3_S", 22: "IQ2_S",
    23: "IQ4_XS", 24: "I8", 25: "I16", 26: "I32", 27: "I64", 28: "F64", 29: "IQ1_M", 30: "BF16",
}
SUPPORTED_TYPES = ("F32", "F16", "BF16", "Q4_0", "Q4_1", "Q8_0")
GROUP_SIZE = 32  # every GGML block type MLX unpacks has 32 values per block
SHARD_BYTES = 2 << 30
DTYPES = {"float32": mx.float32, "float16": mx.float16, "bfloat16": mx.bfloat16}

_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q",
            11: "<q", 12: "<d"}
_TOP = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}
_LAYER = {
    "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_SKIP = ("rope_freqs", "attn_rot_embd")  # rope_freqs becomes config["rope_scaling"]

Progress = Callable[[LoadProgress], None] | None


def _corrupt(path: Path, detail: str) -> ModelError:
    return ModelError(
        f"{path} is truncated or corrupt ({detail}). It is probably an incomplete download: "
        "download the file again."
    )


def scan_gguf(path: str | Path) -> tuple[dict, dict[str, str]]:
    """Read a GGUF header without loading tensors.

    Returns (metadata with scalar and string values; arrays are skipped, {tensor: GGML type}).
    """
    path = Path(path)
    try:
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            return _parse_header(buf, path)
    except FileNotFoundError as e:
        raise ModelError(f"GGUF file not found: {path}. Check the path.") from e
    except IsADirectoryError as e:
        raise ModelError(f"{path} is a folder, not a .gguf file. Give the GGUF file.") from e
    except (struct.error, ValueError, UnicodeDecodeError, OverflowError) as e:
        raise _corrupt(path, f"bad header: {e}") from e
    except OSError as e:
        raise ModelError(f"Cannot read {path}: {e.strerror or e}. Check the file's "
                         "permissions.") from e


def _parse_header(buf, path: Path) -> tuple[dict, dict[str, str]]:
    if buf[:4] != b"GGUF":
        raise ModelError(f"{path} is not a GGUF file (no GGUF magic). Give a .gguf model file.")
    (version,) = struct.unpack_from("<I", buf, 4)
    if version < 2:
        raise ModelError(f"{path} uses GGUF version {version}, too old; convert it again with "
                         "a current llama.cpp.")
    n_tensors, n_kv = struct.unpack_from("<QQ", buf, 8)
    pos = 24

    def string(pos: int) -> tuple[str, int]:
        (n,) = struct.unpack_from("<Q", buf, pos)
        if pos + 8 + n > len(buf):
            raise ValueError("a string runs past the end of the file")
        return bytes(buf[pos + 8 : pos + 8 + n]).decode("utf-8"), pos + 8 + n

    def value(t: int, pos: int):
        if t in _SCALARS:
            return struct.unpack_from(_SCALARS[t], buf, pos)[0], pos + struct.calcsize(_SCALARS[t])
        if t == 8:
            return string(pos)
        if t == 9:
            et, n = struct.unpack_from("<IQ", buf, pos)
            pos += 12
            if et in _SCALARS:
                return None, pos + n * struct.calcsize(_SCALARS[et])
            for _ in range(n):
                _, pos = value(et, pos)
            return None, pos
        raise ValueError(f"unknown metadata value type {t}")

    meta: dict = {}
    for _ in range(n_kv):
        key, pos = string(pos)
        (t,) = struct.unpack_from("<I", buf, pos)
        v, pos = value(t, pos + 4)
        if v is not None:
            meta[key] = v
    tensors: dict[str, str] = {}
    for _ in range(n_tensors):
        name, pos = string(pos)
        (nd,) = struct.unpack_from("<I", buf, pos)
        (t,) = struct.unpack_from("<I", buf, pos + 4 + 8 * nd)
        tensors[name] = GGML_TYPES.get(t, f"type {t}")
        pos += 4 + 8 * nd + 12
    return meta, tensors


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


def _unpermute(x: mx.array, n_head: int) -> mx.array:
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


def _config(meta: dict, weights: dict, path: Path) -> dict:
    def get(key: str, default=None):
        v = meta.get(f"llama.{key}", default)
        if v is None:
            raise ModelError(f"{path}: the GGUF lacks llama.{key}. The file is incomplete or not "
                             "a plain llama model.")
        return v

    d, nh = int(get("embedding_length")), int(get("attention.head_count"))
    head_dim = int(get("attention.key_length", d // nh))
    if int(get("rope.dimension_count", head_dim)) != head_dim:
        raise ModelError(f"{path}: RoPE on part of each head is not supported for llama models.")
    if "token_embd.weight" not in weights:
        raise _corrupt(path, "no token_embd tensor")
    config = {
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        "hidden_size": d,
        "num_hidden_layers": int(get("block_count")),
        "intermediate_size": int(get("feed_forward_length")),
        "num_attention_heads": nh,
        "num_key_value_heads": int(get("attention.head_count_kv", nh)),
        "head_dim": head_dim,
        "rms_norm_eps": _f32(get("attention.layer_norm_rms_epsilon")),
        "rope_theta": _f32(get("rope.freq_base", 10000.0)),
        "vocab_size": int(weights["token_embd.weight"].shape[0]),
        "max_position_embeddings": int(get("context_length", 2048)),
        "tie_word_embeddings": "output.weight" not in weights,
    }
    scaling = meta.get("llama.rope.scaling.type")
    if scaling == "linear":
        config["rope_scaling"] = {"type": "linear", "factor": float(get("rope.scaling.factor"))}
    elif scaling not in (None, "none"):
        raise ModelError(f"{path}: RoPE scaling {scaling!r} is not supported. Use the model's "
                         "Hugging Face folder.")
    if "rope_freqs.weight" in weights:
        freqs = np.array(weights["rope_freqs.weight"].astype(mx.float32))
        config["rope_scaling"] = _llama3_rope(freqs, config["rope_theta"], head_dim, path)
    for key, ggml in (("bos_token_id", "bos"), ("eos_token_id", "eos")):
        if (v := meta.get(f"tokenizer.ggml.{ggml}_token_id")) is not None:
            config[key] = int(v)
    return config


def _convert(weights: dict, config: dict, dtype, path: Path) -> tuple[dict, dict[str, int]]:
    """Lazy HF-named arrays in layer order, and the bit width of each still-quantized module."""
    groups: dict[str, dict[str, mx.array]] = {}
    for name, arr in weights.items():
        base, _, part = name.rpartition(".")
        if base in _SKIP:
            continue
        module = _hf_module(base)
        if module is None or part not in ("weight", "scales", "biases"):
            raise ModelError(f"{path}: unexpected tensor {name!r}; only plain llama models "
                             "(no mixture-of-experts, no biases) can be imported.")
        groups.setdefault(module, {})[part] = arr
    heads = {"q_proj": config["num_attention_heads"], "k_proj": config["num_key_value_heads"]}
    out: dict[str, mx.array] = {}
    bits: dict[str, int] = {}
    for module in sorted(groups, key=_order):
        parts = groups[module]
        n_head = heads.get(module.rsplit(".", 1)[-1])
        if n_head:
            parts = {k: _unpermute(v, n_head) for k, v in parts.items()}
        if "weight" not in parts or ("scales" in parts) != ("biases" in parts):
            raise _corrupt(path, f"incomplete tensor group for {module}")
        w = parts["weight"]
        if "scales" in parts:
            s, b = parts["scales"], parts["biases"]
            nbits = w.shape[-1] // s.shape[-1]
            if dtype is None:
                out.update({f"{module}.weight": w, f"{module}.scales": s, f"{module}.biases": b})
                bits[module] = nbits
                continue
            w = mx.dequantize(w, s.astype(mx.float32), b.astype(mx.float32),
                              group_size=GROUP_SIZE, bits=nbits)
        elif not mx.issubdtype(w.dtype, mx.floating):
            raise ModelError(f"{path}: tensor {module} has type {w.dtype}, which is not "
                             "supported. Use an F16, F32, Q8_0, Q4_0 or Q4_1 GGUF.")
        out[f"{module}.weight"] = w if dtype is None else w.astype(dtype)
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


def save_model_dir(out: Path, arrays: dict[str, mx.array], progress: Progress = None,
                   what: str = "writing weights") -> None:
    """Write `arrays` (in order) as model.safetensors, or shards of <= SHARD_BYTES + an index.

    Consumes `arrays`: each shard's entries are set to None once written, so a model larger
    than memory is converted one shard at a time.
    """
    shards: list[list[str]] = [[]]
    size = 0
    for name, arr in arrays.items():
        if shards[-1] and size + arr.nbytes > SHARD_BYTES:
            shards.append([])
            size = 0
        shards[-1].append(name)
        size += arr.nbytes
    total, done = len(arrays), 0
    weight_map = {}
    for i, names in enumerate(shards):
        fname = ("model.safetensors" if len(shards) == 1
                 else f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors")
        for name in names:
            mx.eval(arrays[name])
            done += 1
            if progress:
                progress(LoadProgress(what, done, total))
        mx.save_safetensors(str(out / fname), {n: arrays[n] for n in names},
                            metadata={"format": "mlx"})
        weight_map.update({n: fname for n in names})
        for name in names:  # free this shard before computing the next
            arrays[name] = None
    if len(shards) > 1:
        index = {"metadata": {}, "weight_map": weight_map}
        (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=1))


def write_failure(out_dir: Path, exc: BaseException) -> ModelError:
    """A failed write of a model folder (disk full, read-only, quota) as one clear error."""
    try:
        free = f"{shutil.disk_usage(out_dir.parent).free / 2**20:.0f} MB free there"
    except OSError:
        free = "free space unknown"
    if isinstance(exc, OSError):
        reason = exc.strerror or str(exc)
    else:  # MLX's writer raises RuntimeError("[write] Unable to write N bytes to file.")
        reason = f"{str(exc).removeprefix('[write] ')} (is the disk full?)"
    return ModelError(f"Writing the model to {out_dir} failed: {reason}; {free}. Nothing was "
                      "kept; free some disk space (or choose another folder) and try again.")


def staging_dir(out_dir: Path) -> Path:
    """A fresh sibling folder to build `out_dir` in; rename it into place when complete."""
    tmp = out_dir.parent / f".{out_dir.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
    except OSError as e:
        raise write_failure(out_dir, e) from e
    return tmp


def publish(tmp: Path, out_dir: Path) -> None:
    """Replace `out_dir` by the completed `tmp` folder."""
    if out_dir.exists():
        old = out_dir.parent / f".{out_dir.name}.old-{os.getpid()}"
        out_dir.rename(old)
        tmp.rename(out_dir)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(out_dir)


def import_gguf(gguf_path: str | Path, out_dir: str | Path, *, dtype: str | None = "float32",
                progress: Progress = None, overwrite: bool = False) -> Path:
    """Convert a llama GGUF into a model folder at `out_dir` and return its path.

    Args:
        dtype: "float32", "float16" or "bfloat16" dequantizes every weight to that type; None
            keeps quantized tensors as MLX affine quantized weights (config "quantization",
            with per-module entries where bit widths differ).
        overwrite: replace an existing non-empty `out_dir` (otherwise that is an error).
    """
    path, out = Path(gguf_path).expanduser(), Path(out_dir).expanduser()
    if dtype is not None and dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)} or None, not {dtype!r}")
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise ModelError(f"{out} already exists and is not empty. Remove it or choose another "
                         "output folder.")
    meta, types = scan_gguf(path)
    arch = meta.get("general.architecture")
    if arch != "llama":
        raise ModelError(f"{path} is a {arch!r} model; only llama-architecture GGUF files "
                         "(Llama, SmolLM, Mistral-style) can be imported.")
    bad = sorted({t for t in types.values() if t not in SUPPORTED_TYPES})
    if bad:
        raise ModelError(f"{path} has tensors of type {', '.join(bad)}, which cannot be "
                         f"imported. Use a {', '.join(SUPPORTED_TYPES)} GGUF of this model.")
    if progress:
        progress(LoadProgress(f"reading {path.name}", 0, 1))
    try:
        weights, full_meta = mx.load(str(path), format="gguf", return_metadata=True)
    except Exception as e:  # MLX raises RuntimeError with C++ text
        raise _corrupt(path, str(e).removeprefix("[load_gguf] ")) from e
    if progress:
        progress(LoadProgress(f"reading {path.name}", 1, 1))
    config = _config(meta, weights, path)
    arrays, bits = _convert(weights, config, None if dtype is None else DTYPES[dtype], path)
    if (q := _quant_config(bits)) is not None:
        config["quantization"] = q
        config["quantization_config"] = q
    if dtype is not None:
        config["torch_dtype"] = dtype
    tokenizer, tok_config = build_tokenizer(full_meta, path, config["max_position_embeddings"])
    if tokenizer.get_vocab_size() > config["vocab_size"]:
        raise _corrupt(path, "more tokens than embedding rows")

    from .loader import build_model

    build_model(config, dict(arrays), path)  # checks names and shapes before writing anything
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = staging_dir(out)
    try:
        (tmp / "config.json").write_text(json.dumps(config, indent=1))
        tokenizer.save(str(tmp / "tokenizer.json"))
        (tmp / "tokenizer_config.json").write_text(json.dumps(tok_config, indent=1))
        del weights
        save_model_dir(tmp, arrays, progress, f"converting {path.name}")
        publish(tmp, out)
    except (OSError, RuntimeError) as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise write_failure(out, e) from e
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
