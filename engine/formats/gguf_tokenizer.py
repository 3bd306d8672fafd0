"""Build a Hugging Face `tokenizer.json` + `tokenizer_config.json` from GGUF tokenizer metadata.

Only byte-level BPE vocabularies (`tokenizer.ggml.model == "gpt2"`) are supported: SmolLM,
Llama 3, GPT-2 style. The pre-tokenizer follows `tokenizer.ggml.pre` (llama.cpp's name for it).
"""

from __future__ import annotations

from pathlib import Path

from ..errors import ModelError

# llama.cpp token types (llama_token_type)
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6

# Llama 3's pre-tokenizer regex (llama.cpp `llama-bpe`, HF Llama-3 tokenizer.json).
LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
LLAMA3_NAMES = ("llama-bpe", "llama3", "llama-v3", "smaug-bpe")
# Qwen2's (llama.cpp `qwen2`, HF Qwen2 tokenizer.json): Llama 3's with single digits.
QWEN2_PATTERN = LLAMA3_PATTERN.replace(r"\p{N}{1,3}", r"\p{N}")
QWEN2_NAMES = ("qwen2", "deepseek-r1-qwen")


def _pre_tokenizer(pre: str | None):
    """The HF pre-tokenizer for llama.cpp's `tokenizer.ggml.pre` name."""
    from tokenizers import Regex, pre_tokenizers

    if pre == "smollm":
        return pre_tokenizers.Sequence(
            [
                pre_tokenizers.Digits(individual_digits=True),
                pre_tokenizers.ByteLevel(add_prefix_space=False),
            ]
        )
    if pre in LLAMA3_NAMES or pre in QWEN2_NAMES:
        pattern = QWEN2_PATTERN if pre in QWEN2_NAMES else LLAMA3_PATTERN
        return pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
    # "gpt-2", "default", absent, or a name we do not know: GPT-2's own regex.
    return pre_tokenizers.ByteLevel(add_prefix_space=False)


def _list(v) -> list:
    return v.tolist() if hasattr(v, "tolist") else list(v)


def _ids(meta: dict, key: str) -> int | None:
    v = meta.get(key)
    if v is None:
        return None
    return int(v.item() if hasattr(v, "item") else v)


def _flag(meta: dict, key: str, default: bool) -> bool:
    v = meta.get(key)
    if v is None:
        return default
    return bool(v.item() if hasattr(v, "item") else v)


def build_tokenizer(meta: dict, where: Path, context_length: int | None = None):
    """Return (tokenizers.Tokenizer, tokenizer_config dict) for the GGUF metadata `meta`."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, processors

    kind = meta.get("tokenizer.ggml.model")
    if kind != "gpt2":
        raise ModelError(
            f"{where}: the tokenizer type {kind!r} is not supported (only byte-level BPE, "
            "tokenizer.ggml.model 'gpt2'). Use the model's Hugging Face folder instead."
        )
    tokens = meta.get("tokenizer.ggml.tokens")
    merges = meta.get("tokenizer.ggml.merges")
    if not tokens or merges is None:
        raise ModelError(
            f"{where}: the GGUF lacks its tokenizer (tokens or merges). The file is incomplete; "
            "re-download it."
        )
    types = meta.get("tokenizer.ggml.token_type")
    types = [NORMAL] * len(tokens) if types is None else [int(t) for t in _list(types)]
    vocab: dict[str, int] = {}
    for i, t in enumerate(tokens):
        vocab.setdefault(t, i)
    pairs = [tuple(m.split(" ", 1)) for m in merges]
    pre = meta.get("tokenizer.ggml.pre")
    # Llama 3 looks whole pre-tokens up in the vocabulary before merging (ignore_merges).
    tok = Tokenizer(
        models.BPE(vocab=vocab, merges=pairs, fuse_unk=False, ignore_merges=pre in LLAMA3_NAMES)
    )
    if pre in QWEN2_NAMES:
        tok.normalizer = normalizers.NFC()  # as Qwen2's own tokenizer.json
    tok.pre_tokenizer = _pre_tokenizer(pre)
    tok.decoder = decoders.ByteLevel()
    special = [AddedToken(tokens[i], special=True, normalized=False)
               for i, t in enumerate(types) if t == CONTROL]
    user = [AddedToken(tokens[i], special=False, normalized=False)
            for i, t in enumerate(types) if t == USER_DEFINED]
    tok.add_special_tokens(special)
    tok.add_tokens(user)

    def name(key: str) -> str | None:
        i = _ids(meta, key)
        return tokens[i] if i is not None and 0 <= i < len(tokens) else None

    bos, eos = name("tokenizer.ggml.bos_token_id"), name("tokenizer.ggml.eos_token_id")
    add_bos = _flag(meta, "tokenizer.ggml.add_bos_token", False) and bos is not None
    if add_bos:
        bos_id = _ids(meta, "tokenizer.ggml.bos_token_id")
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, bos_id)]
        )
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": bos,
        "eos_token": eos,
        "unk_token": name("tokenizer.ggml.unknown_token_id"),
        "pad_token": name("tokenizer.ggml.padding_token_id"),
        "add_bos_token": add_bos,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": int(context_length or 2048),
    }
    if template := meta.get("tokenizer.chat_template"):
        config["chat_template"] = template
    return tok, config
