"""`canopy adapt`: record on prompts, adapt the draft, measure held-out prompts before/after.

The engine (engine/adapt) records, trains and measures; this module wires the arguments and
prints one JSON object (or a short summary).
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace

from app.cli import resolve_pair
from engine.config import AdaptConfig, GenerationConfig, TreeConfig
from engine.errors import CanopyError

_ADAPT = AdaptConfig()
PHASES = ("measure", "record", "adapt")


def add_adapt_parser(sub, fmt: dict) -> None:
    from app.cli import add_pair_args

    a = sub.add_parser("adapt", help="teach the draft from the target on your prompts "
                       "(record, LoRA-distil, measure held-out prompts before/after)", **fmt)
    add_pair_args(a)
    a.add_argument("--prompts", help="prompts to record on, one per line")
    a.add_argument("--holdout", help="held-out prompts measured before and after, one per line")
    a.add_argument("--other", default=None,
                   help="prompts of another domain, also measured before/after (optional)")
    a.add_argument("--mode", choices=["chain", "tree"], default="chain",
                   help="decoding mode for recording and measuring (greedy)")
    a.add_argument("--max-tokens", type=int, default=64, help="new tokens per prompt")
    a.add_argument("--top-k", type=int, default=_ADAPT.top_k,
                   help="target probabilities recorded per position")
    a.add_argument("--cap-mb", type=float, default=_ADAPT.cap_bytes / 2**20,
                   help="recording buffer cap per pair (oldest dropped first)")
    a.add_argument("--layers", type=int, default=_ADAPT.layers,
                   help="last draft blocks given LoRA adapters (the rest frozen)")
    a.add_argument("--rank", type=int, default=_ADAPT.rank, help="LoRA rank")
    a.add_argument("--epochs", type=int, default=_ADAPT.max_epochs, help="epochs at most")
    a.add_argument("--learning-rate", type=float, default=_ADAPT.learning_rate, help="Adam")
    a.add_argument("--no-fuse", action="store_true",
                   help="apply adapters as LoRA modules instead of fusing them into weights")
    a.add_argument("--fresh", action="store_true",
                   help="clear the pair's buffer and adapters first")
    a.add_argument("--only", choices=PHASES, default=None,
                   help="one phase alone, on the pair's stored buffer and adapters: measure "
                   "(--holdout [--other], with the adopted adapter), record (--prompts) or adapt "
                   "(the buffer); lets a long benchmark run in pieces")
    a.add_argument("--status", action="store_true", help="print buffer and adapter state, exit")
    a.add_argument("--clear", action="store_true",
                   help="clear the pair's buffer and reset its adapters, exit")
    a.add_argument("--adapt-home", default=None,
                   help="folder of recordings and adapters (default: $CANOPY_HOME/adapt)")
    a.add_argument("--json", action="store_true", help="print one JSON object")
    a.set_defaults(func=run_adapt_command)


def adapt_config(args) -> AdaptConfig:
    """The adaptation settings asked for; invalid ones raise CanopyError (exit 2).

    CanopyError, not app.cli's SettingsError: under `python -m app.cli` that class lives in
    `__main__`, so one raised from here would not be caught as a setting error.
    """
    try:
        return AdaptConfig(top_k=args.top_k, cap_bytes=int(args.cap_mb * 2**20),
                           layers=args.layers, rank=args.rank, max_epochs=args.epochs,
                           learning_rate=args.learning_rate)
    except ValueError as e:
        raise CanopyError(str(e)) from e


def run_adapt_command(args) -> int:
    from engine.adapt.evaluate import measure, read_prompts
    from engine.adapt.run import Adaptation
    from engine.session import Session

    config = adapt_config(args)
    if args.max_tokens < 1:
        raise CanopyError("--max-tokens must be at least 1")
    needs = {"measure": ("holdout",), "record": ("prompts",), "adapt": (),
             None: ("prompts", "holdout")}[args.only]
    if not (args.status or args.clear) and not all(getattr(args, n) for n in needs):
        raise CanopyError("canopy adapt needs " + " and ".join(f"--{n} FILE" for n in needs)
                          + (f" with --only {args.only}" if args.only else
                             " (or --status / --clear)"))
    sets = {"prompts": args.prompts, "holdout": args.holdout, "other": args.other}
    prompts = {k: read_prompts(v) for k, v in sets.items() if v and not args.status}
    target, draft = resolve_pair(args, "chain")
    session = Session.load(target, draft)
    try:
        adaptation = Adaptation(session, target, draft, config, args.adapt_home,
                                fuse=not args.no_fuse)
        store = adaptation.store
        if args.clear or args.fresh:
            store.buffer.clear()
            adaptation.reset()
        if args.status or args.clear:
            return emit(args, status(adaptation))
        adaptation.use_adopted()
        gen = GenerationConfig(mode=args.mode, max_tokens=args.max_tokens,
                               tree=replace(TreeConfig(), adaptive=False))
        if args.only:
            return emit(args, run_phase(args, adaptation, prompts, gen, config))
        out = {"before": {}, "after": {}, "version_before": adaptation.version}
        say(args, "measuring held-out prompts (before)")
        out["before"]["holdout"] = measure(session, prompts["holdout"], gen)
        if "other" in prompts:
            out["before"]["other"] = measure(session, prompts["other"], gen)
        say(args, f"recording on {len(prompts['prompts'])} prompts")
        out["record"] = measure(session, prompts["prompts"], gen, store.buffer, config.top_k)
        for p in adaptation.run():
            held = "" if p.holdout_loss is None else (
                f", held-out KL {p.holdout_loss:.3f}, agreement {p.holdout_agreement:.3f}")
            say(args, f"slice {p.slice} (epoch {p.epoch}): train KL {p.train_loss:.3f}{held}")
        out["adapt"] = adaptation.last
        say(args, "measuring held-out prompts (after)")
        out["after"]["holdout"] = measure(session, prompts["holdout"], gen)
        if "other" in prompts:
            out["after"]["other"] = measure(session, prompts["other"], gen)
        out["version_after"] = adaptation.version
        out["buffer"] = status(adaptation)["buffer"]
        out["settings"] = {"mode": args.mode, "max_tokens": args.max_tokens,
                           "fuse": not args.no_fuse, **vars_of(config)}
        return emit(args, out)
    finally:
        session.close()


def run_phase(args, adaptation, prompts: dict, gen, config: AdaptConfig) -> dict:
    """`--only PHASE`: one step of the full command, on the pair's stored state."""
    from engine.adapt.evaluate import measure

    session, store = adaptation.session, adaptation.store
    out = {"phase": args.only, "version": adaptation.version}
    if args.only == "measure":
        for name in ("holdout", "other"):
            if name in prompts:
                say(args, f"measuring {name} prompts")
                out[name] = measure(session, prompts[name], gen)
    elif args.only == "record":
        say(args, f"recording on {len(prompts['prompts'])} prompts")
        out["record"] = measure(session, prompts["prompts"], gen, store.buffer, config.top_k)
    else:
        for p in adaptation.run():
            say(args, f"slice {p.slice} (epoch {p.epoch}): train KL {p.train_loss:.3f}")
        out["adapt"] = adaptation.last
        out["version"] = adaptation.version
    out["buffer"] = status(adaptation)["buffer"]
    out["settings"] = {"mode": args.mode, "max_tokens": args.max_tokens,
                       "fuse": not args.no_fuse, **vars_of(config)}
    return out


def status(adaptation) -> dict:
    store = adaptation.store
    return {
        "pair_folder": str(store.folder),
        "buffer": {"sequences": len(store.buffer), "positions": store.buffer.positions,
                   "bytes": store.buffer.size_bytes, "cap_bytes": store.buffer.cap_bytes},
        "adopted_version": store.adopted,
        "versions": store.versions(),
    }


def vars_of(config: AdaptConfig) -> dict:
    from dataclasses import asdict

    return asdict(config)


def say(args, text: str) -> None:
    if not args.json:
        print(text, file=sys.stderr)


def emit(args, out: dict) -> int:
    print(json.dumps(out, indent=None if args.json else 1))
    return 0
