"""Helpers shared by the tests that write tiny GGUFs: tensor names for Hugging Face tensor names
(llama.cpp's convention) and the vocabulary of a tokenizer.json."""

LAYER = {
    "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
    "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}
TOP = {"model.embed_tokens": "token_embd", "model.norm": "output_norm", "lm_head": "output"}


def gguf_name(hf: str) -> str:
    """"model.layers.3.self_attn.q_proj.bias" -> "blk.3.attn_q.bias"."""
    base, _, part = hf.rpartition(".")
    if base in TOP:
        return f"{TOP[base]}.{part}"
    _, _, n, rest = base.split(".", 3)
    return f"blk.{n}.{LAYER[rest]}.{part}"


def add_vocabulary(w, tok: dict, vocab_size: int, pre: str, pad: str) -> dict[str, int]:
    """Write tokenizer.json's BPE vocabulary, added (control) tokens, padding rows named
    `{pad}{id}` up to `vocab_size`, and merges to GGUFWriter `w`; returns {added token: id}."""
    vocab = sorted(tok["model"]["vocab"].items(), key=lambda kv: kv[1])
    added = {t["content"]: t["id"] for t in tok["added_tokens"]}
    tokens = [t for t, _ in vocab] + [t for t, _ in sorted(added.items(), key=lambda kv: kv[1])]
    types = [1] * len(vocab) + [3] * len(added)
    tokens += [f"{pad}{i}" for i in range(len(tokens), vocab_size)]
    types += [5] * (vocab_size - len(types))
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(pre)
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges([" ".join(m) if isinstance(m, list) else m for m in tok["model"]["merges"]])
    return added
