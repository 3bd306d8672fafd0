"""The `canopy` command line. Imports Qt only for `canopy app`.

Commands: `models demo|import-gguf|list`, `generate`, `bench`, `app`. Errors meant for a person
(CanopyError) print one line to stderr and exit 2; no tracebacks.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from app.blas import maybe_reexec_with_openblas


def add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--target", help="target model folder (default: the demo pair's target)")
    p.add_argument("--draft", help="draft model folder (default: the demo pair's draft)")
    p.add_argument(
        "--budget-mb",
        type=float,
        default=None,
        help="stream the target under this many MB of resident weights",
    )
    p.add_argument(
        "--no-cache-bypass",
        action="store_true",
        help="let streamed reads use the OS page cache (default: bypass it)",
    )
    p.add_argument(
        "--prefetch", type=int, default=2, help="streamed layers the IO thread may read ahead"
    )


def add_generation_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-tokens", type=int, default=256)
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--mode", choices=["ar", "chain", "tree"], default="tree")
    p.add_argument("--tree-nodes", type=int, default=None, help="tree node budget")
    p.add_argument("--tree-depth", type=int, default=None, help="tree depth cap")
    p.add_argument("--threshold", type=float, default=None, help="initial fallback threshold")
    p.add_argument("--no-adaptive", action="store_true", help="keep the threshold fixed")
    p.add_argument("--chain-length", type=int, default=4, help="draft tokens per step (chain)")
    p.add_argument("--no-pipeline", action="store_true",
                   help="streamed target: do not draft while its layers load")


def generation_config(args):
    from dataclasses import replace

    from engine.config import GenerationConfig, SamplingConfig, TreeConfig

    tree = TreeConfig()
    for field, value in (
        ("max_nodes", args.tree_nodes),
        ("max_depth", args.tree_depth),
        ("threshold", args.threshold),
    ):
        if value is not None:
            tree = replace(tree, **{field: value})
    if args.no_adaptive:
        tree = replace(tree, adaptive=False)
    return GenerationConfig(
        mode=args.mode,
        max_tokens=args.max_tokens,
        sampling=SamplingConfig(args.temperature, args.top_p, args.seed),
        tree=tree,
        chain_length=args.chain_length,
        pipeline=not args.no_pipeline,
    )


def resolve_pair(args) -> tuple[str, str | None]:
    """The target/draft folders asked for, defaulting to the demo pair."""
    target, draft = args.target, args.draft
    if target is None:
        from engine.formats import demo

        target = demo.models_home() / demo.TARGET_NAME
        draft = draft or demo.models_home() / demo.DRAFT_NAME
        if not os.path.isdir(target):
            from engine.errors import ModelError

            raise ModelError(
                "No model given and the demo pair is not built yet. Run "
                "`canopy models demo` first, or pass --target DIR."
            )
    if args.mode == "ar" and args.draft is None:
        draft = None
    return str(target), (str(draft) if draft else None)


def stream_options(args) -> dict:
    if args.budget_mb is None:
        return {}
    return {"bypass_cache": not args.no_cache_bypass, "prefetch": args.prefetch}


def cmd_generate(args) -> int:
    from engine.events import Failed, Finished, StepEvent
    from engine.session import Session

    config = generation_config(args)
    target, draft = resolve_pair(args)
    budget = int(args.budget_mb * 2**20) if args.budget_mb is not None else None
    session = Session.load(target, draft, budget_bytes=budget, **stream_options(args))
    if args.chat:
        ids = session.encode_chat([{"role": "user", "content": args.prompt}], system=args.system)
    else:
        ids = session.encode(args.prompt)
    shown = ""
    for event in session.generate(ids, config):
        if isinstance(event, StepEvent) and not args.json:
            shown += event.text
            print(event.text, end="", flush=True)
        elif isinstance(event, Failed):
            print(f"canopy: {event.message}", file=sys.stderr)
            return 1
        elif isinstance(event, Finished):
            if args.json:
                out = {
                    "text": event.text,
                    "token_ids": list(event.token_ids),
                    "finish_reason": event.reason,
                    "stats": event.stats.to_dict(),
                }
                print(json.dumps(out))
            else:
                print(event.text[len(shown) :])
                s = event.stats
                print(
                    f"[{s.generated_tokens} tokens, {s.tokens_per_second:.1f} tok/s, "
                    f"{s.tokens_per_pass:.2f} tokens/target pass, {event.reason}]",
                    file=sys.stderr,
                )
    return 0


def cmd_models(args) -> int:
    from engine.formats import demo

    if args.models_cmd == "demo":
        target, draft = demo.build_demo_pair(
            args.home, progress=lambda e: print(f"{e.what}: {e.done}/{e.total}", file=sys.stderr)
        )
        print(f"target: {target}\ndraft:  {draft}")
    elif args.models_cmd == "import-gguf":
        from engine.formats.gguf import import_gguf

        dtype = None if args.dtype == "keep" else args.dtype
        print(import_gguf(args.file, args.out_dir, dtype=dtype, overwrite=args.overwrite))
    elif args.models_cmd == "list":
        for name, path in demo.list_models(args.home):
            print(f"{name}\t{path}")
    return 0


def cmd_app(args) -> int:
    from app.gui import run_app

    return run_app(args)


def cmd_bench(args) -> int:
    from engine.bench.run import run_bench_cli

    return run_bench_cli(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="canopy", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    g = sub.add_parser("generate", help="generate text from a prompt")
    add_model_args(g)
    add_generation_args(g)
    g.add_argument("--prompt", required=True)
    g.add_argument("--chat", action="store_true", help="wrap the prompt in the chat template")
    g.add_argument("--system", default=None, help="system prompt (with --chat)")
    g.add_argument("--json", action="store_true", help="print one JSON object")
    g.set_defaults(func=cmd_generate)

    m = sub.add_parser("models", help="build, import and list models")
    msub = m.add_subparsers(dest="models_cmd", required=True)
    d = msub.add_parser("demo", help="build the demo pair (SmolLM2-135M target + 4-bit draft)")
    d.add_argument("--home", default=None, help="models folder (default $CANOPY_HOME/models)")
    i = msub.add_parser("import-gguf", help="convert a llama GGUF into a model folder")
    i.add_argument("file")
    i.add_argument("out_dir")
    i.add_argument(
        "--dtype",
        default="float32",
        choices=["float32", "float16", "bfloat16", "keep"],
        help="dequantize to this dtype, or keep the GGUF's quantization",
    )
    i.add_argument("--overwrite", action="store_true", help="replace an existing OUT_DIR")
    ls = msub.add_parser("list", help="list models in the models folder and the HF cache")
    ls.add_argument("--home", default=None)
    m.set_defaults(func=cmd_models)

    a = sub.add_parser("app", help="open the desktop app")
    add_model_args(a)
    a.add_argument("--screenshot", default=None, help="run --prompt, save the window to PNG, exit")
    a.add_argument("--prompt", default=None)
    a.add_argument(
        "--self-test",
        action="store_true",
        help="generate with a tiny model in tree and ar mode, check equal, exit",
    )
    a.set_defaults(func=cmd_app)

    b = sub.add_parser("bench", help="side-by-side benchmark against mlx-lm")
    b.add_argument("--quick", action="store_true", help="small run (tiny models, few prompts)")
    b.add_argument("--out", default="bench-results", help="output folder")
    add_model_args(b)
    b.add_argument("--prompts", type=int, default=None,
                   help="greedy prompts (default 20; half of them at temperature 0.7)")
    b.add_argument("--max-tokens", type=int, default=None, help="new tokens per prompt (24)")
    b.add_argument("--devices", action="store_true",
                   help="print the Apple Silicon prediction table and exit")
    b.set_defaults(func=cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    maybe_reexec_with_openblas(argv)
    args = build_parser().parse_args(argv)
    from engine.errors import CanopyError

    try:
        return args.func(args)
    except CanopyError as e:
        print(f"canopy: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
