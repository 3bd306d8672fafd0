"""mlx-lm in Canopy's own process, on the very weights Canopy holds: an extra row of
`canopy bench --speed` (the main row runs mlx-lm in its own process, as its users run it).

Same process, same BLAS threads, same arrays: what is left between the two is the decode loop
itself. mlx-lm's model is built lazily from the folder (nothing is read) and its parameters are
replaced by Canopy's resident target's, which carry mlx-lm's names; where the two differ in
names, shapes or dtypes (e.g. weights Canopy stores in another form) the row is not run.
"""

from __future__ import annotations

from pathlib import Path


def share_weights(target) -> tuple[object, object] | str:
    """(mlx-lm model, mlx-lm tokenizer) running on `target`'s resident weights (a loaded
    Canopy model), or why it cannot."""
    import mlx_lm
    from mlx.utils import tree_flatten, tree_unflatten

    if hasattr(target.model, "io_stats"):
        return "the target is streamed"
    model, tokenizer = mlx_lm.load(str(Path(target.path)), lazy=True)
    ours = dict(tree_flatten(target.model.parameters()))
    theirs = dict(tree_flatten(model.parameters()))
    if ours.keys() != theirs.keys():
        return "parameter names differ: " + ", ".join(sorted(ours.keys() ^ theirs.keys())[:3])
    for name, a in ours.items():
        b = theirs[name]
        if a.shape != b.shape or a.dtype != b.dtype:
            return f"{name}: Canopy holds {a.dtype} {a.shape}, mlx-lm builds {b.dtype} {b.shape}"
    model.update(tree_unflatten(list(ours.items())))
    return model, tokenizer


def run_in_process(model, tokenizer, ids: list[int], max_tokens: int) -> dict:
    """mlx-lm's `stream_generate`, greedy: its own prompt and generation rates, as its command
    prints them (engine.bench.speed.run_mlx_lm reads the same figures from that output)."""
    from mlx_lm import stream_generate

    from ..blas_threads import use_blas_threads

    use_blas_threads(streamed=False)  # mlx-lm's default: every core
    last = None
    for last in stream_generate(model, tokenizer, ids, max_tokens=max_tokens):
        pass
    ttft = last.prompt_tokens / last.prompt_tps
    return {"prompt_tokens": last.prompt_tokens, "ttft_seconds": ttft,
            "generated_tokens": last.generation_tokens,
            "decode_tokens_per_second": last.generation_tps,
            "total_seconds": ttft + last.generation_tokens / last.generation_tps}
