"""The `canopy` command line. Imports Qt only for `canopy app`.

Commands: `models demo|import-gguf|list`, `generate`, `bench`, `app`. Errors meant for a person
(CanopyError) print one line to stderr and exit 2; no tracebacks. Shared flags: app/cli_args.py.
"""

from __future__ import annotations

import argparse
import json
import sys

from app.blas import maybe_reexec_with_openblas
from app.cli_args import (  # noqa: F401  (re-exported: bench/soak/adapt commands import them)
    _GEN,
    _JSON_MODE,
    HelpFormatter,
    Parser,
    SettingsError,
    add_budget_arg,
    add_generation_args,
    add_pair_args,
    add_stream_args,
    budget_bytes,
    checked,
    generation_config,
    resolve_pair,
    stream_config,
)
from engine.config import (
    BENCH_MAX_TOKENS,
    BENCH_PROMPTS,
    CODER_BENCH_MAX_TOKENS,
    CODER_BENCH_MINUTES,
    CODER_BENCH_TREE_NODES,
    DRAFT_FREE_AR_PROBE_TOKENS,
    DRAFT_FREE_MAX_TOKENS,
    IOBENCH_LAYERS,
    IOBENCH_MB,
    IOBENCH_REPEAT,
    SPEED_FRESH_PAIRS,
    SPEED_REPEATS,
    SoakConfig,
)

_SOAK = SoakConfig()

def cmd_generate(args) -> int:
    from engine.events import Failed, Finished, StepEvent
    from engine.session import Session

    config = checked(generation_config, args)  # every setting checked before anything loads
    stream, budget = checked(stream_config, args), checked(budget_bytes, args)
    target, draft = resolve_pair(args, config.mode)
    session = Session.load(target, draft, budget_bytes=budget, stream=stream)
    try:
        if draft is not None and not args.no_adapter:  # the pair's adopted `canopy adapt` result
            from engine.adapt.run import Adaptation

            Adaptation(session, target, draft).use_adopted()
        if args.chat:
            ids = session.encode_chat([{"role": "user", "content": args.prompt}],
                                      system=args.system)
        else:
            ids = session.encode(args.prompt)
        shown = ""
        for event in session.generate(ids, config):
            if isinstance(event, StepEvent) and not args.json:
                shown += event.text
                print(event.text, end="", flush=True)
            elif isinstance(event, Failed):
                return fail(args, event.message, 1)
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
    finally:
        session.close()
    return 0


def fail(args, message: str, code: int) -> int:
    """One line for a person on stderr; with --json also {"error": ...} on stdout."""
    if getattr(args, "json", False):
        print(json.dumps({"error": message}))
    print(f"canopy: {message}", file=sys.stderr)
    return code


def cmd_models(args) -> int:
    from engine.formats import demo

    if args.models_cmd == "demo":
        def progress(e):
            print(f"{e.what}: {e.done}/{e.total}", file=sys.stderr)

        if getattr(args, "pair", "smollm2") == "coder":
            from engine.formats.pairs import build_coder_pair

            target, draft = build_coder_pair(args.home, progress=progress)
        else:
            target, draft = demo.build_demo_pair(args.home, progress=progress)
        print(f"target: {target}\ndraft:  {draft}")
    elif args.models_cmd == "import-gguf":
        from engine.formats.gguf import import_gguf

        dtype = None if args.dtype == "keep" else args.dtype
        print(import_gguf(args.file, args.out_dir, dtype=dtype, overwrite=args.overwrite))
    elif args.models_cmd == "pull":
        from engine.formats.hub import pull_model

        print(pull_model(args.repo_id, args.revision, progress=_download_progress()))
    elif args.models_cmd == "catalog":
        from engine.costmodel.catalog import catalog_markdown

        print(catalog_markdown(int(args.ram_gb * 1e9) if args.ram_gb else None, args.chip))
    elif args.models_cmd == "list":
        for name, path in demo.list_models(args.home):
            print(f"{name}\t{path}")
    return 0


def _download_progress():
    """A one-line terminal progress bar on stderr, redrawn at most every 1% or so."""
    shown = [-1]

    def report(event) -> None:
        mb, total = event.done / 2**20, event.total / 2**20
        pct = int(100 * event.done / event.total) if event.total else 0
        if pct != shown[0]:
            shown[0] = pct
            end = "\n" if event.done >= event.total else ""
            print(f"\rdownload: {mb:.1f} / {total:.1f} MB ({pct}%)", end=end, file=sys.stderr,
                  flush=True)

    return report


def cmd_app(args) -> int:
    from app.gui import run_app

    checked(budget_bytes, args)  # checked here: the app would only show it in a banner
    args.stream = checked(stream_config, args)
    return run_app(args)


def cmd_export(args) -> int:
    from app.export import run_export_cli

    return run_export_cli(args)


def cmd_bench(args) -> int:
    from app.bench_cli import run_bench_command

    if args.json and not args.devices:
        raise SettingsError("--json applies to --devices only (the benchmark writes bench.json)")
    if args.pair == "coder" and (args.target or args.draft or args.speed or args.io):
        raise SettingsError("--pair coder runs the coder pair's own benchmark: without "
                            "--target/--draft, --speed or --io")

    return run_bench_command(args)


def cmd_soak(args) -> int:
    from app.soak_cli import run_soak_cli

    return run_soak_cli(args)


def build_parser() -> argparse.ArgumentParser:
    fmt = {"formatter_class": HelpFormatter}
    parser = Parser(prog="canopy", description=__doc__.splitlines()[0], **fmt)
    parser.add_argument("--version", action="version", version=f"canopy {canopy_version()}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    g = sub.add_parser("generate", help="generate text from a prompt", **fmt)
    add_pair_args(g)
    add_budget_arg(g)
    add_stream_args(g)
    add_generation_args(g)
    g.add_argument("--prompt", required=True, help="the prompt text")
    g.add_argument("--chat", action="store_true", help="wrap the prompt in the chat template")
    g.add_argument("--system", default=None, help="system prompt (with --chat)")
    g.add_argument("--no-adapter", action="store_true",
                   help="use the draft as shipped, not its adopted `canopy adapt` adapter")
    g.add_argument("--json", action="store_true",
                   help="print one JSON object (text, token_ids, stats); errors as {\"error\"}")
    g.set_defaults(func=cmd_generate)

    m = sub.add_parser("models", help="build, import and list models", **fmt)
    msub = m.add_subparsers(dest="models_cmd", required=True, parser_class=Parser)
    d = msub.add_parser("demo", help="build the demo pair (SmolLM2-135M target + 4-bit draft)",
                        **fmt)
    d.add_argument("--home", default=None, help="models folder (default $CANOPY_HOME/models)")
    d.add_argument("--pair", choices=["smollm2", "coder"], default="smollm2",
                   help="smollm2: SmolLM2-135M pair (93 MB download, default); coder: "
                   "Qwen2.5-Coder 1.5B target + 0.5B draft (1.6 GB download)")
    i = msub.add_parser("import-gguf", help="convert a llama or qwen2 GGUF into a model folder",
                        **fmt)
    i.add_argument("file", help="the .gguf file")
    i.add_argument("out_dir", help="the model folder to write")
    i.add_argument(
        "--dtype",
        default="float32",
        choices=["float32", "float16", "bfloat16", "keep"],
        help="dequantize to this dtype, or keep the GGUF's quantization",
    )
    i.add_argument("--overwrite", action="store_true", help="replace an existing OUT_DIR")
    pl = msub.add_parser("pull", help="download a model from the Hugging Face Hub into the HF "
                         "cache (only the files a model needs; run again to resume)", **fmt)
    pl.add_argument("repo_id", help="ORG/NAME, e.g. mlx-community/SmolLM2-135M-Instruct")
    pl.add_argument("--revision", default=None, help="branch, tag or commit (default: main)")
    cat = msub.add_parser("catalog", help="known-good Mac pairs and how they fit this RAM "
                          "(predicted speeds)", **fmt)
    cat.add_argument("--ram-gb", type=float, default=None, help="RAM to plan for (default: "
                     "this machine's)")
    cat.add_argument("--chip", default=None, help="Apple chip the speeds assume, e.g. \"M4 Pro\" "
                     "or \"M4 Pro (16-core GPU)\" (default: this Mac's, else the Mac closest "
                     "in RAM); the figures `canopy bench --devices` uses")
    ls = msub.add_parser("list", help="list models in the models folder and the HF cache", **fmt)
    ls.add_argument("--home", default=None, help="models folder (default $CANOPY_HOME/models)")
    m.set_defaults(func=cmd_models)

    a = sub.add_parser("app", help="open the desktop app", **fmt)
    add_pair_args(a)
    add_budget_arg(a)
    add_stream_args(a)
    a.add_argument("--screenshot", default=None, help="run --prompt, save the window to PNG, exit")
    a.add_argument("--prompt", default=None, help="send this prompt once the models are loaded")
    a.add_argument("--dark", action="store_true", help="dark appearance, whatever the system's")
    a.add_argument(
        "--self-test",
        action="store_true",
        help="generate with a tiny model in tree and ar mode, check equal, exit",
    )
    a.set_defaults(func=cmd_app)

    x = sub.add_parser("export", help="export a chat as Markdown or JSON (with stats)")
    x.add_argument("conversation", nargs="?", type=int, help="conversation id (see --list)")
    x.add_argument("--format", choices=["md", "json"], default="md")
    x.add_argument("--db", default=None, help="history file (default: the app's)")
    x.add_argument("--out", default=None, help="write here instead of stdout")
    x.add_argument("--list", action="store_true", help="list conversations (id, title)")
    x.set_defaults(func=cmd_export)

    b = sub.add_parser("bench", help="side-by-side benchmark against mlx-lm (its budgets are "
                       "resident, 50%% and 25%% of the target)", **fmt)
    b.add_argument("--quick", action="store_true", help="small run (tiny models, few prompts)")
    b.add_argument("--out", default="bench-results", help="output folder")
    add_pair_args(b)
    add_stream_args(b)
    b.add_argument("--pair", choices=["demo", "coder"], default="demo",
                   help="demo: the SmolLM2 pair or --target/--draft (default); coder: the "
                   "Qwen2.5-Coder 1.5B/0.5B pair (`canopy models demo --pair coder`), resident, "
                   "streamed and inside a memory cgroup, planned to fit --minutes")
    b.add_argument("--prompts", type=int, default=None,
                   help=f"greedy prompts (default {BENCH_PROMPTS}, half as many at temperature "
                   "0.7; --pair coder: prompts per phase at most, default 10; --draft-free: "
                   "prompts per task, default all)")
    b.add_argument("--max-tokens", type=int, default=None,
                   help=f"new tokens per prompt (default {BENCH_MAX_TOKENS}; --pair coder "
                   f"{CODER_BENCH_MAX_TOKENS}; --draft-free {DRAFT_FREE_MAX_TOKENS})")
    b.add_argument("--minutes", type=float, default=CODER_BENCH_MINUTES,
                   help="--pair coder: wall-time budget the run plans its prompt counts for")
    b.add_argument("--tree-nodes", type=int, default=CODER_BENCH_TREE_NODES,
                   help="--pair coder: the fixed large tree budget of the fixed-tree rows")
    b.add_argument("--devices", action="store_true",
                   help="print Apple Silicon predictions and exit; with --target/--draft "
                   "(a model folder, its config.json or a catalog name such as "
                   "qwen2.5-7b-4bit) for that pair on every M1-M4 chip")
    b.add_argument("--json", action="store_true",
                   help="--devices: one JSON object, a row per chip and mode")
    b.add_argument("--speed", action="store_true",
                   help="Canopy against mlx-lm's own generate, target alone: decode tok/s and "
                   "TTFT at several prompt lengths, tree (auto) with a bad draft, streamed 50%%")
    b.add_argument("--fresh-pairs", type=int, default=SPEED_FRESH_PAIRS,
                   help="--speed: pairs of fresh processes running tree (auto) with the bad "
                   "draft, without then with the timing the first stored (0: none)")
    b.add_argument("--repeats", type=int, default=SPEED_REPEATS,
                   help="--speed: rounds of the resident rows (figures are medians, each "
                   "ratio the median of the rounds' own, with its range)")
    b.add_argument("--draft-free", action="store_true",
                   help="drafts without a draft model: ar, lookahead, prompt lookup, draft tree "
                   "and merged tree on code edit, summarization, question answering and chat "
                   "prompts, resident and streamed at 50%%: tokens per pass, tok/s vs ar")
    b.add_argument("--budgets", default=None,
                   help="--draft-free: budgets to run, comma-separated 'resident', fractions "
                   "of the layer bytes (the rest of the target stays resident too) or MB such "
                   "as 3390MB (default resident,50%%)")
    b.add_argument("--modes", default=None,
                   help="--draft-free: modes to run, comma-separated (default all: ar, "
                   "lookahead, prompt lookup, draft-free tree, draft tree, merged tree)")
    b.add_argument("--ar-ids", default=None,
                   help="--draft-free: a draft_free.json of the same pair whose ar ids the "
                   "modes are checked against; ar itself then runs only "
                   f"{DRAFT_FREE_AR_PROBE_TOKENS} tokens (its tok/s)")
    b.add_argument("--io", action="store_true",
                   help="run the layer-read micro-benchmark (engine.streaming.iobench) and exit")
    b.add_argument("--io-mb", type=int, default=IOBENCH_MB,
                   help="--io: MB of the synthetic model")
    b.add_argument("--io-layers", type=int, default=IOBENCH_LAYERS, help="--io: layers in it")
    b.add_argument("--io-repeat", type=int, default=IOBENCH_REPEAT, help="--io: passes per reader")
    b.add_argument("--io-dir", default=None, help="--io: folder for its files (default: tmp)")
    b.set_defaults(func=cmd_bench)

    s = sub.add_parser("soak", help="many generations in one process: memory, fds, threads",
                       **fmt)
    add_pair_args(s)
    add_budget_arg(s)
    add_stream_args(s)
    s.add_argument("--generations", type=int, default=_SOAK.generations, help="generations")
    s.add_argument("--max-tokens", type=int, default=_SOAK.max_tokens,
                   help="new tokens per generation")
    s.add_argument("--json", action="store_true", help="print one JSON object")
    s.set_defaults(func=cmd_soak)

    from app.adapt_cli import add_adapt_parser

    add_adapt_parser(sub, fmt)
    return parser


def canopy_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("canopy")
    except PackageNotFoundError:  # a source checkout that was never pip-installed
        from pathlib import Path

        import tomllib

        pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
        try:
            return tomllib.loads(pyproject.read_text())["project"]["version"]
        except (OSError, KeyError, ValueError):
            return "unknown"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    _JSON_MODE[0] = "--json" in argv
    maybe_reexec_with_openblas(argv)
    args = build_parser().parse_args(argv)
    from engine.errors import CanopyError

    try:
        return args.func(args)
    except (CanopyError, SettingsError) as e:  # a person's input: bad model, settings or pair
        return fail(args, str(e), 2)
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # never a traceback on stdout for --json consumers
        if not getattr(args, "json", False):
            raise
        return fail(args, f"Internal error: {type(e).__name__}: {e}", 1)


if __name__ == "__main__":
    sys.exit(main())
