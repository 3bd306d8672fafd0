"""The `canopy` command line's shared arguments: parser classes, the flags several commands take,
and their translation into engine configs (one clear error naming the flag, exit 2)."""

from __future__ import annotations

import argparse
import json
import os
import re
from dataclasses import replace
from pathlib import Path

from engine.config import (
    BRANCH_SOURCES,
    MODES,
    GenerationConfig,
    LookupConfig,
    SamplingConfig,
    StreamConfig,
)

_GEN = GenerationConfig()
_STREAM = StreamConfig()

# Config fields whose command-line flag is not simply --field-name.
_FLAG_OF_FIELD = {"max_nodes": "--tree-nodes", "max_depth": "--tree-depth"}


def flag_for(field: str) -> str:
    """The command-line flag that sets config field `field` (top_p -> --top-p)."""
    return _FLAG_OF_FIELD.get(field, "--" + field.replace("_", "-"))


class SettingsError(Exception):
    """An invalid setting given on the command line (exit 2)."""


def checked(make, *a):
    """`make(*a)`, with the config's ValueError turned into a SettingsError (exit 2)."""
    try:
        return make(*a)
    except ValueError as e:
        # The config names its field (top_p); a person typed a flag (--top-p).
        message = re.sub(r"^Invalid setting (\w+)", lambda m: f"Invalid {flag_for(m[1])}", str(e))
        raise SettingsError(message) from e


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows "(default: X)" unless the help already says it or there is no value to show."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text or action.default in (None, False, argparse.SUPPRESS):
            return text
        return super()._get_help_string(action)


class Parser(argparse.ArgumentParser):
    """Exit 2 on bad arguments; with --json anywhere in argv, the error is JSON on stdout."""

    def error(self, message: str):
        if _JSON_MODE[0]:
            print(json.dumps({"error": f"{self.prog}: {message}"}))
        self.exit(2, f"{self.prog}: error: {message}\n")


_JSON_MODE = [False]  # set by main() when the argv it parses has --json


def add_pair_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--target", help="target model folder (default: the demo pair's target)")
    p.add_argument("--draft", help="draft model folder (default: the demo pair's draft)")


def add_stream_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--no-cache-bypass",
        action="store_true",
        help="let streamed reads use the OS page cache (default: bypass it)",
    )
    p.add_argument("--prefetch", type=int, default=_STREAM.prefetch,
                   help="streamed layers the IO thread may read ahead")
    p.add_argument("--read-timeout", type=float, default=_STREAM.read_timeout,
                   help="seconds one streamed layer read may take before the answer fails")


def add_budget_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--budget-mb", type=float, default=None,
                   help="stream the target under this many MB of resident weights "
                        "(default: the whole target resident)")


def add_generation_args(p: argparse.ArgumentParser) -> None:
    tree, sampling = _GEN.tree, _GEN.sampling
    p.add_argument("--max-tokens", type=int, default=_GEN.max_tokens, help="new tokens at most")
    p.add_argument("--temperature", type=float, default=sampling.temperature,
                   help="sampling temperature; 0 is greedy (output equals --mode ar)")
    p.add_argument("--top-p", type=float, default=sampling.top_p,
                   help="nucleus sampling: keep the smallest set of tokens with this mass")
    p.add_argument("--seed", type=int, default=sampling.seed,
                   help="random seed for sampling (default: random)")
    p.add_argument("--mode", choices=list(MODES), default=_GEN.mode,
                   help="ar: target alone; chain: a draft chain per step; tree: a token tree "
                        "(without a draft: prompt lookup and the n-gram pool); lookahead: "
                        "Jacobi decoding with the target alone")
    p.add_argument("--no-draft", action="store_true",
                   help="use the target alone (tree mode: draft-free branches only)")
    p.add_argument("--branches", type=branch_sources, default=_GEN.lookup.sources,
                   help="draft-free branch sources in tree mode: comma-separated from "
                        f"{', '.join(BRANCH_SOURCES)}, or 'none' (default: all)")
    p.add_argument("--tree-nodes", type=int, default=tree.max_nodes, help="tree node budget")
    p.add_argument("--tree-depth", type=int, default=tree.max_depth, help="tree depth cap")
    p.add_argument("--threshold", type=float, default=tree.threshold,
                   help="initial fallback threshold on the best path probability")
    p.add_argument("--no-adaptive", action="store_true",
                   help="keep threshold and node cap fixed (no online adaptation, no auto ar)")
    p.add_argument("--chain-length", type=int, default=_GEN.chain_length,
                   help="draft tokens per step (chain)")
    p.add_argument("--no-pipeline", action="store_true",
                   help="streamed target: do not draft while its layers load")
    p.add_argument("--draft-vocab", type=draft_vocab, default=_GEN.draft_vocab,
                   help="vocabulary rows the draft scores: auto (a subset above 64k tokens), "
                        "full, or N (the lowest N ids + special and conversation tokens); "
                        "the target always verifies with its full vocabulary")


def generation_config(args) -> GenerationConfig:
    """The request's config; invalid values raise ValueError (exit 2)."""
    tree = replace(_GEN.tree, max_nodes=args.tree_nodes, max_depth=args.tree_depth,
                   threshold=args.threshold)
    if args.no_adaptive:
        tree = replace(tree, adaptive=False)
    return GenerationConfig(
        mode=args.mode,
        max_tokens=args.max_tokens,
        sampling=SamplingConfig(args.temperature, args.top_p, args.seed),
        tree=tree,
        chain_length=args.chain_length,
        pipeline=not args.no_pipeline,
        lookup=LookupConfig(sources=args.branches),
        draft_vocab=args.draft_vocab,
    )


def draft_vocab(text: str) -> str | int:
    """`--draft-vocab auto|full|N`."""
    if text in ("auto", "full"):
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("use auto, full or a whole number of rows") from None


def branch_sources(text: str) -> tuple[str, ...]:
    """`--branches prompt,ngram` -> ("prompt", "ngram"); `none` -> ()."""
    if text.strip() == "none":
        return ()
    names = tuple(s.strip() for s in text.split(",") if s.strip())
    unknown = [n for n in names if n not in BRANCH_SOURCES]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown source {', '.join(unknown)}; choose from "
                                         f"{', '.join(BRANCH_SOURCES)} or none")
    return names


def stream_config(args) -> StreamConfig:
    return StreamConfig(prefetch=args.prefetch, bypass_cache=not args.no_cache_bypass,
                        read_timeout=args.read_timeout)


def budget_bytes(args) -> int | None:
    if args.budget_mb is None:
        return None
    if not args.budget_mb > 0:
        raise ValueError(f"--budget-mb must be more than 0, not {args.budget_mb:g}")
    return int(args.budget_mb * 2**20)


def resolve_pair(args, mode: str = "tree") -> tuple[str, str | None]:
    """The target/draft folders asked for, defaulting to the demo pair; both checked (config,
    weights, tokenizer files present) before anything loads."""
    from engine.errors import ModelError

    target, draft = args.target, args.draft
    if target is None:
        from engine.formats import demo

        target = demo.models_home() / demo.TARGET_NAME
        draft = draft or demo.models_home() / demo.DRAFT_NAME
        if not os.path.isdir(target):
            raise ModelError(
                "No model given and the demo pair is not built yet. Run "
                "`canopy models demo` first, or pass --target DIR."
            )
    if (mode in ("ar", "lookahead") and args.draft is None) or getattr(args, "no_draft", False):
        draft = None
    for folder in (target, draft):
        if folder is not None:
            check_model_folder(Path(folder).expanduser())
    if mode == "chain" and draft is None:
        raise ModelError("--mode chain needs a draft model: pass --draft DIR (or --mode ar, "
                         "lookahead or tree, which work without one).")
    return str(target), (str(draft) if draft else None)


def check_model_folder(path: Path) -> None:
    """Config, weight files and tokenizer files present (nothing is loaded)."""
    from engine.formats.loader import load_tokenizer, read_config, weight_files

    read_config(path)
    weight_files(path)
    if not any((path / f).exists() for f in ("tokenizer.json", "tokenizer.model")):
        load_tokenizer(path)  # raises the one clear "no tokenizer" error

