"""A scripted stand-in for engine.session.Session: yields real engine events, no MLX."""

from __future__ import annotations

import time
from dataclasses import dataclass

from engine.events import Failed, Finished, LoadProgress, PrefillDone, Stats, StepEvent

ANSWER = (
    "Speculative decoding lets a small **draft** model guess ahead.\n\n"
    "```python\nprint('hello tree')\n```\n\n"
    "- the target checks the whole tree in one pass\n- accepted tokens cost nothing extra\n"
)


def tree_shape(parents, probs) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """(depth, path probability) of every node, as the engine's TokenTree records them."""
    depths: list[int] = []
    paths: list[float] = []
    for p, prob in zip(parents, probs):
        depths.append(depths[p] + 1 if p >= 0 else 0)
        paths.append(paths[p] * prob if p >= 0 else 1.0)
    return tuple(depths), tuple(paths)


def make_step(index: int, words: list[str], n_accept: int, width: int = 2, depth: int = 3,
              mode: str = "tree", bonus: str | None = " x") -> StepEvent:
    """A tree: root, a main chain of `depth` nodes, `width - 1` rejected siblings per level.

    The first `n_accept` chain nodes are accepted; `words` gives their texts.
    """
    tokens, parents, probs, texts = [100 + index], [-1], [1.0], ["root"]
    chain_parent = 0
    chain = []
    for d in range(depth):
        for w in range(width):
            parents.append(chain_parent)
            tokens.append(1000 + 10 * d + w)
            probs.append(0.8 / (w + 1) ** 2)
            texts.append(words[d] if (w == 0 and d < len(words)) else f"alt{d}{w}")
            if w == 0:
                chain.append(len(tokens) - 1)
        chain_parent = chain[-1]
    accepted = (0, *chain[:n_accept])
    emitted = [texts[i] for i in chain[:n_accept]] + ([bonus] if bonus is not None else [])
    flags = (True,) * n_accept + ((False,) if bonus is not None else ())
    depths, paths = tree_shape(parents, probs)
    return StepEvent(
        index=index, mode=mode, tree_tokens=tuple(tokens), tree_parents=tuple(parents),
        tree_probs=tuple(probs), tree_depths=depths, tree_path_probs=paths,
        tree_texts=tuple(texts), accepted=accepted,
        bonus_token=7 if bonus is not None else None, token_ids=tuple(range(len(flags))),
        from_draft=flags, token_texts=tuple(emitted), text="".join(emitted),
        draft_seconds=0.01, verify_seconds=0.02,
        io_wait_seconds=0.005, bytes_read=3_000_000, target_resident_bytes=40_000_000,
        layers_pinned=20, layers_streamed=10, threshold=0.05,
    )


def script_for(text: str) -> list[StepEvent]:
    """Steps that emit `text`: chunks of up to 3 drafted pieces + one target piece."""
    pieces = [text[i:i + 4] for i in range(0, len(text), 4)]
    steps, i, k = [], 0, 0
    while i < len(pieces):
        n_accept = min(k % 4, len(pieces) - i - 1)
        drafted = pieces[i:i + n_accept]
        bonus = pieces[i + n_accept]
        steps.append(make_step(k, drafted, n_accept, bonus=bonus))
        i += n_accept + 1
        k += 1
    return steps


def stats_for(steps: list[StepEvent], seconds: float) -> Stats:
    tokens = sum(len(s.token_ids) for s in steps)
    return Stats(
        mode="tree", prompt_tokens=12, generated_tokens=tokens, target_passes=len(steps),
        tokens_per_pass=tokens / max(1, len(steps)), tokens_per_second=tokens / max(seconds, 1e-6),
        prefill_seconds=0.01, decode_seconds=seconds, time_to_first_token=0.05,
        acceptance_by_depth=(0.7, 0.5, 0.3),
    )


@dataclass
class FakeModel:
    name: str
    num_layers: int = 30


class FakeSession:
    def __init__(self, text: str = ANSWER, delay: float = 0.0, fail: str | None = None):
        self.target, self.draft = FakeModel("fake-target"), FakeModel("fake-draft")
        self.context_length = 2048
        self.text, self.delay, self.fail = text, delay, fail
        self.requests: list[tuple[list[dict], str | None]] = []
        self.conversations: list[int | None] = []

    def chat(self, messages, config, should_stop=None, system=None, conversation=None,
             observer_for=None):
        self.requests.append((messages, system))
        self.conversations.append(conversation)
        stop = should_stop or (lambda: False)
        if observer_for is not None:
            observer_for([1, 2, 3])  # a real session hands the observer to the decode loop
        yield PrefillDone(12, 0.01)
        if self.fail:
            yield Failed(self.fail)
            return
        steps = script_for(self.text)
        t0 = time.perf_counter()
        done: list[StepEvent] = []
        for step in steps:
            if stop():
                break
            if self.delay:
                time.sleep(self.delay)
            done.append(step)
            yield step
        reason = "cancelled" if len(done) < len(steps) else "eos"
        text = "".join(s.text for s in done)
        ids = tuple(t for s in done for t in s.token_ids)
        yield Finished(reason, text, ids, stats_for(done, time.perf_counter() - t0))


class FakeAdaptation:
    """Stands in for engine.adapt.run.Adaptation: a buffer of counted recordings; `run` yields
    `slices` AdaptProgress, `delay` seconds each, checking `should_stop` like the Trainer."""

    def __init__(self, slices: int = 3, delay: float = 0.0, cap_bytes: int = 64 << 20):
        self.slices, self.delay, self.cap_bytes = slices, delay, cap_bytes
        self.recorded = 0  # ever
        self.sequences = 0  # in the buffer now
        self.version: int | None = None
        self.runs = self.cancelled_runs = self.slices_done = 0
        self.last: dict | None = None

    def recorder(self, prompt_ids):
        return lambda *step: None

    def keep(self, recorder) -> None:
        self.recorded += 1
        self.sequences += 1

    def status(self) -> dict:
        return {"sequences": self.sequences, "positions": 40 * self.sequences,
                "bytes": 9000 * self.sequences, "cap_bytes": self.cap_bytes,
                "recorded_total": self.recorded, "adopted_version": self.version}

    def clear_buffer(self) -> None:
        self.sequences = 0

    def reset(self) -> None:
        self.version = None

    def set_cap(self, cap_bytes: int) -> None:
        self.cap_bytes = cap_bytes

    def run(self, should_stop=None):
        from engine.adapt.train import AdaptProgress

        stop = should_stop or (lambda: False)
        self.runs += 1
        for i in range(self.slices):
            if self.delay:
                time.sleep(self.delay)
            if stop():
                self.cancelled_runs += 1
                yield AdaptProgress(i, 1, i, 0.5, None, None, 0.0, True, True)
                return
            self.slices_done += 1
            last = i == self.slices - 1
            yield AdaptProgress(i, 1, i + 1, 0.5 - 0.1 * i, 0.4 if last else None,
                                0.8 if last else None, 0.01 * (i + 1), last)
        self.version = (self.version or 0) + 1
        self.last = {"version": self.version, "adopted": True, "holdout_agreement_before": 0.7,
                     "holdout_agreement_after": 0.8, "adapt_seconds": 0.05}


class FakeLoader:
    """Callable like Session.load; records calls; `fail` makes the next load raise.
    `make_adaptation` gives the bridge `self.adaptation` (see app/bridge_adapt.py)."""

    def __init__(self):
        self.session = FakeSession()
        self.adaptation = FakeAdaptation()
        self.calls: list[tuple] = []
        self.fail: Exception | None = None

    def make_adaptation(self, session, target, draft, config):
        self.adaptation.cap_bytes = config.cap_bytes
        return self.adaptation

    def __call__(self, target, draft, *, budget_bytes=None, progress=None):
        self.calls.append((target, draft, budget_bytes))
        if progress:
            progress(LoadProgress("target", 0, 2))
            progress(LoadProgress("draft", 1, 2))
        if self.fail is not None:
            raise self.fail
        if progress:
            progress(LoadProgress("ready", 2, 2))
        return self.session
