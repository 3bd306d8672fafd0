"""Benchmark runs in a process of their own: mlx-lm as its users run it (its own process, its
defaults), and runs inside a memory cgroup (engine.bench.cgroup).

The parent writes a JSON job file and starts `python -c CHILD job.json`; the child writes the
samples it finished to the job's `out` file after each run, so a killed child still leaves what
it completed and the parent reads the exit status (-9: killed by the kernel's OOM killer).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .environment import peer_environment
from .runs import Config, Sample

CHILD = "import sys; from engine.bench.child import main; main(sys.argv[1])"


@dataclass
class ChildResult:
    returncode: int
    samples: list[Sample]
    seconds: float
    stderr_tail: str = ""
    cgroup_peak_bytes: int | None = None
    extra: dict = field(default_factory=dict)

    @property
    def killed(self) -> bool:
        return self.returncode == -9

    @property
    def status(self) -> str:
        if self.returncode == 0:
            return "completed"
        if self.killed:
            return "killed (SIGKILL: out of memory)"
        return f"failed (exit {self.returncode})"


def job(engine: str, target: str | Path, draft: str | Path | None, runs: list[tuple],
        max_tokens: int, target_bytes: int, **extra) -> dict:
    """A job: `runs` = [(prompt index, prompt ids, Config)], run in order in one process."""
    return {
        "engine": engine, "target": str(target), "draft": draft and str(draft),
        "max_tokens": max_tokens, "target_bytes": target_bytes,
        "runs": [{"prompt": i, "ids": list(ids), "config": asdict(cfg)} for i, ids, cfg in runs],
        **extra,
    }


def run_child(spec: dict, folder: Path, name: str, preexec_fn=None,
              timeout: float | None = None) -> ChildResult:
    """Run `spec` (see `job`) in a fresh Python process; its samples, exit status and time."""
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / f"{name}.out.json"
    out.unlink(missing_ok=True)
    path = folder / f"{name}.job.json"
    path.write_text(json.dumps(dict(spec, out=str(out))))
    t0 = time.perf_counter()
    try:
        r = subprocess.run([sys.executable, "-c", CHILD, str(path)], capture_output=True,
                           text=True, preexec_fn=preexec_fn, timeout=timeout,
                           env=peer_environment())
        code, err = r.returncode, r.stderr
    except subprocess.TimeoutExpired as e:
        code, err = -15, f"timed out after {timeout:.0f} s: {e.stderr or ''}"
    samples = [_sample(d) for d in json.loads(out.read_text())] if out.exists() else []
    return ChildResult(code, samples, time.perf_counter() - t0, (err or "")[-1500:])


def _sample(d: dict) -> Sample:
    d = dict(d, ids=tuple(d["ids"]), depth1=tuple(d["depth1"]))
    return Sample(**d)


def main(job_path: str) -> None:
    """The child's entry: run the job's runs in order, writing samples as they finish."""
    spec = json.loads(Path(job_path).read_text())
    out, done = Path(spec["out"]), []
    runs = [(r["prompt"], r["ids"], Config(**r["config"])) for r in spec["runs"]]
    make = _mlx_lm_samples if spec["engine"] == "mlx-lm" else _canopy_samples
    for sample in make(spec, runs):
        done.append(asdict(sample))
        partial = out.with_suffix(".partial")
        partial.write_text(json.dumps(done))
        partial.replace(out)


def _mlx_lm_samples(spec: dict, runs: list):
    import mlx_lm

    from .runs import run_mlx_lm

    model, tokenizer = mlx_lm.load(spec["target"])
    draft = None
    for i, ids, cfg in runs:
        if cfg.mode == "chain" and draft is None:  # loaded when first needed: ar's peak is alone
            draft, _ = mlx_lm.load(spec["draft"])
        yield run_mlx_lm(model, tokenizer, draft, ids, cfg, spec["max_tokens"], i,
                         spec["target_bytes"])


def _canopy_samples(spec: dict, runs: list):
    from ..config import StreamConfig
    from ..session import Session
    from .runs import run_canopy

    stream = StreamConfig(**spec.get("stream", {}))
    session = Session.load(spec["target"], spec["draft"], budget_bytes=spec.get("budget_bytes"),
                           stream=stream)
    try:
        for i, ids, cfg in runs:
            yield run_canopy(session, ids, cfg, spec["max_tokens"], i)
    finally:
        session.close()
