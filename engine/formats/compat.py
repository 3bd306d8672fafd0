"""Can this draft speculate for this target? Checked before loading any weights."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import IncompatibleModelsError
from .loader import read_config


def _vocab(path: Path) -> dict[str, int] | None:
    tok_file = path / "tokenizer.json"
    if not tok_file.exists():
        return None
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(tok_file)).get_vocab(with_added_tokens=True)


def check_pair(target_dir: str | Path, draft_dir: str | Path) -> str:
    """Raise IncompatibleModelsError unless the draft's tokens mean what the target's mean.

    Padded embedding rows beyond the tokenizer's vocabulary (Qwen) are tolerated: only the
    tokenizers' vocabularies must agree. Returns a short description of the pair.
    """
    target_dir, draft_dir = Path(target_dir).expanduser(), Path(draft_dir).expanduser()
    t_cfg, d_cfg = read_config(target_dir), read_config(draft_dir)
    t_vocab, d_vocab = _vocab(target_dir), _vocab(draft_dir)
    names = f"target {target_dir.name} and draft {draft_dir.name}"
    if t_vocab is not None and d_vocab is not None:
        if t_vocab != d_vocab:
            diff = len(set(t_vocab.items()) ^ set(d_vocab.items()))
            raise IncompatibleModelsError(
                f"The {names} use different tokenizers ({len(t_vocab)} vs {len(d_vocab)} tokens, "
                f"{diff} entries differ). Pick a draft from the same model family as the target."
            )
        n = max(t_vocab.values()) + 1
        if min(t_cfg["vocab_size"], d_cfg["vocab_size"]) < n:
            raise IncompatibleModelsError(
                f"The {names}: a model's vocab_size is smaller than its tokenizer ({n} tokens)."
            )
    elif t_cfg["vocab_size"] != d_cfg["vocab_size"]:
        raise IncompatibleModelsError(
            f"The {names} have different vocabulary sizes ({t_cfg['vocab_size']} vs "
            f"{d_cfg['vocab_size']}). Pick a draft from the same model family as the target."
        )
    return f"{names}: same tokenizer ({len(t_vocab or {}) or t_cfg['vocab_size']} tokens)"


def describe(path: str | Path) -> dict:
    """Name, type, layers and size of a model folder, for pickers (no weights read)."""
    path = Path(path).expanduser()
    cfg = read_config(path)
    size = sum(f.stat().st_size for f in path.glob("*.safetensors"))
    return {
        "name": path.name,
        "path": str(path),
        "model_type": cfg["model_type"],
        "layers": cfg["num_hidden_layers"],
        "bytes": size,
        "quantization": json.dumps(cfg.get("quantization")) if cfg.get("quantization") else None,
    }
