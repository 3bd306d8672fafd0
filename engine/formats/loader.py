"""Load a model directory (mlx-lm / Hugging Face layout) with person-readable errors.

A model directory holds `config.json`, one or more `*.safetensors` (optionally with
`model.safetensors.index.json`) and tokenizer files (`tokenizer.json` or `tokenizer.model`,
`tokenizer_config.json`). MLX affine-quantized checkpoints (config key `quantization`) load
quantized.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten

from ..errors import ModelError
from ..models import FAMILIES, family

SUPPORTED = ", ".join(sorted(FAMILIES))
SIZE_KEYS = ("hidden_size", "num_hidden_layers", "intermediate_size", "num_attention_heads",
             "num_key_value_heads", "vocab_size", "max_position_embeddings", "head_dim")


@dataclass
class LoadedModel:
    path: Path
    config: dict
    model: nn.Module
    tokenizer: object  # mlx_lm TokenizerWrapper
    # measurements kept across answers (a draft's timed 1-token forward, DraftModel)
    measured: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def num_layers(self) -> int:
        return len(self.model.layers)

    @property
    def vocab_size(self) -> int:
        return self.model.args.vocab_size

    @property
    def context_length(self) -> int:
        return int(self.config.get("max_position_embeddings") or 32768)

    def nbytes(self) -> int:
        return sum(v.nbytes for _, v in tree_flatten(self.model.parameters()))


def read_config(path: Path) -> dict:
    path = Path(path).expanduser()
    if not path.exists():
        raise ModelError(
            f"Model folder not found: {path}. Check the path, or run `canopy models demo`."
        )
    if not path.is_dir():
        raise ModelError(
            f"{path} is a file, not a model folder. Give the folder that holds config.json "
            "(for a .gguf file, convert it first with `canopy models import-gguf FILE OUT_DIR`)."
        )
    cfg_file = path / "config.json"
    if not cfg_file.exists():
        raise ModelError(
            f"{path} is not a model folder: config.json is missing. Give a folder with "
            "config.json, *.safetensors and tokenizer files (mlx-lm / Hugging Face layout)."
        )
    try:
        config = json.loads(cfg_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelError(
            f"{cfg_file} is not valid JSON ({e}). Re-download or re-convert the model."
        ) from e
    if not isinstance(config, dict):
        raise ModelError(f"{cfg_file} does not hold a JSON object. Re-download the model.")
    model_type = config.get("model_type")
    fam = family(model_type)
    if fam is None:
        raise ModelError(
            f"{path}: model_type {model_type!r} is not supported. Supported model types: "
            f"{SUPPORTED}."
        )
    missing = [k for k in fam.ModelArgs.REQUIRED if k not in config]
    if missing:
        raise ModelError(
            f"{cfg_file} lacks required keys: {', '.join(missing)}. The config is incomplete."
        )
    check_config_values(config, cfg_file)
    return config


def check_config_values(config: dict, cfg_file: Path) -> None:
    """Sizes are positive integers that fit a shape, eps/theta finite numbers, heads divide."""

    def bad(key: str, why: str) -> ModelError:
        return ModelError(f"{cfg_file}: {key} = {config[key]!r} is invalid ({why}). The config is "
                          "corrupt or belongs to another format; fix or re-download it.")

    for key in SIZE_KEYS:
        v = config.get(key)
        if v is None and key in ("num_key_value_heads", "max_position_embeddings", "head_dim"):
            continue
        if not isinstance(v, int) or isinstance(v, bool) or not 0 < v < 2**31:
            raise bad(key, "must be a whole number from 1 to 2**31-1")
    for key in ("rms_norm_eps", "rope_theta"):
        v = config.get(key, 1.0)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < math.inf:
            raise bad(key, "must be a positive finite number")
    heads, kv = config["num_attention_heads"], config.get("num_key_value_heads") or 1
    if "head_dim" not in config and config["hidden_size"] % heads:
        raise bad("num_attention_heads", "must divide hidden_size")
    if heads % kv:
        raise bad("num_key_value_heads", "must divide num_attention_heads")


def new_model(config: dict, where: Path) -> nn.Module:
    """The architecture `config` describes (lazy random init); config trouble -> ModelError."""
    fam = family(config["model_type"])
    try:
        return fam.Model(fam.ModelArgs.from_dict(config))
    except (TypeError, ValueError, KeyError, ZeroDivisionError, OverflowError) as e:
        raise ModelError(f"{where}/config.json has values this model cannot be built from "
                         f"({type(e).__name__}: {e}). Fix or re-download it.") from e


def weight_files(path: Path) -> list[Path]:
    """The safetensors files of a model directory, in a stable order."""
    index = path / "model.safetensors.index.json"
    if index.exists():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise ModelError(f"{index} is corrupt ({e}). Re-download the model.") from e
        files = [path / f for f in sorted(set(weight_map.values()))]
        for f in files:
            if not f.exists():
                raise ModelError(f"{f.name} is listed in {index.name} but missing from {path}.")
        return files
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise ModelError(
            f"{path} has no *.safetensors weight files. Re-download or re-convert the model."
        )
    return files


def is_float_weight(name: str, array: mx.array) -> bool:
    """A floating-point parameter, not the scales/biases of a quantized one."""
    return mx.issubdtype(array.dtype, mx.floating) and not name.endswith((".scales", ".biases"))


def read_weights(files: list[Path]) -> dict[str, mx.array]:
    weights: dict[str, mx.array] = {}
    for f in files:
        try:
            weights.update(mx.load(str(f)))
        except Exception as e:  # MLX raises RuntimeError/ValueError with C++ text
            raise ModelError(
                f"Cannot read weights from {f}: {e}. "
                "The file is corrupt or truncated; re-download it."
            ) from e
    return weights


def check_weights(expected: dict, found: dict, where: Path) -> None:
    """Every tensor the config needs is in `found` (name -> anything with .shape), same shape."""
    missing = sorted(set(expected) - set(found))
    if missing:
        raise ModelError(
            f"{where}: the weights lack {len(missing)} tensors the config needs "
            f"(first: {missing[0]}). The files are incomplete or belong to another model."
        )
    for name, arr in expected.items():
        if tuple(found[name].shape) != tuple(arr.shape):
            raise ModelError(
                f"{where}: tensor {name} has shape {tuple(found[name].shape)}, the config "
                f"expects {tuple(arr.shape)}. config.json does not match the weights."
            )


def quantize_like_checkpoint(model: nn.Module, config: dict, names: Mapping[str, object],
                             where: Path) -> None:
    """Quantize `model` the way the checkpoint is (config key `quantization`), in place.

    A module is quantized when the checkpoint has its `.scales`; mlx-lm style per-module
    overrides (e.g. "model.layers.0.mlp.down_proj": {"bits": 8, "group_size": 32}) win over the
    global bits/group size, and `false` keeps a module in float.
    """
    q = config.get("quantization")
    if q is None:
        return

    def predicate(p: str, m: nn.Module) -> bool | dict:
        if not (hasattr(m, "to_quantized") and f"{p}.scales" in names):
            return False
        override = q.get(p)
        if override is False:
            return False
        return dict(override) if isinstance(override, dict) else True

    try:
        nn.quantize(model, group_size=q["group_size"], bits=q["bits"], class_predicate=predicate)
    except (TypeError, ValueError, KeyError) as e:
        raise ModelError(f"{where}/config.json has an unusable \"quantization\" entry ({q!r}: "
                         f"{type(e).__name__} {e}). Fix or re-download it.") from e


def build_shell(config: dict, names: Mapping[str, object], where: Path):
    """The one loading path for resident and streamed models: build the model shell (random
    init, left lazy), quantize it like the checkpoint, check every tensor's shape.

    Args:
        names: the checkpoint's tensors by name (arrays, or anything with `.shape`).
    Returns:
        (shell, sanitized names, expected parameters by name).
    """
    model = new_model(config, where)
    names = model.sanitize(dict(names))
    quantize_like_checkpoint(model, config, names, where)
    expected = dict(tree_flatten(model.parameters()))
    check_weights(expected, names, where)
    return model, names, expected


def build_model(config: dict, weights: dict[str, mx.array], where: Path) -> nn.Module:
    model, weights, expected = build_shell(config, weights, where)
    model.load_weights([(k, weights[k]) for k in expected])
    return model


def load_tokenizer(path: Path):
    if not ((path / "tokenizer.json").exists() or (path / "tokenizer.model").exists()):
        raise ModelError(
            f"{path} has no tokenizer (tokenizer.json or tokenizer.model). Copy the tokenizer "
            "files from the original model into this folder."
        )
    from mlx_lm.tokenizer_utils import load as load_tokenizer_wrapper

    try:
        return load_tokenizer_wrapper(path)
    except Exception as e:
        raise ModelError(f"Cannot load the tokenizer in {path}: {e}") from e


def load_model(
    path: str | Path, *, lazy: bool = False, dtype: mx.Dtype | None = None
) -> LoadedModel:
    """Load config, weights and tokenizer; raise ModelError with a clear message on bad input.

    Args:
        lazy: leave weights unevaluated (read on first use).
        dtype: cast floating-point weights (not quantized ones) to this dtype.
    """
    path = Path(path).expanduser()
    config = read_config(path)
    tokenizer = load_tokenizer(path)
    weights = read_weights(weight_files(path))
    if dtype is not None:
        # quantized weights keep their packed ints and their scales/biases as stored
        weights = {
            k: v.astype(dtype) if is_float_weight(k, v) else v for k, v in weights.items()
        }
    model = build_model(config, weights, path)
    if not lazy:
        try:
            mx.eval(model.parameters())
        except Exception as e:
            raise ModelError(
                f"Cannot read the weights in {path}: {e}. A file is corrupt or truncated."
            ) from e
    return LoadedModel(path=path, config=config, model=model, tokenizer=tokenizer)
