"""Tensor names in a GGUF file for Hugging Face tensor names (llama.cpp's convention), shared
by the tests that write tiny GGUFs."""

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
