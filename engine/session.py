"""A loaded target (+ optional draft) ready to generate: the engine's front door.

Used by the CLI, the GUI bridge (on the engine thread) and the benchmark.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator
from dataclasses import replace
from pathlib import Path

from .blas_threads import use_blas_threads
from .config import (
    GenerationConfig,
    PromptCacheConfig,
    StreamConfig,
    platform_verify_cost_prior,
)
from .costmodel.timing_store import TimingStore
from .decoding.branch_prior import LookupMemory
from .errors import ContextLengthError, ModelError
from .events import Event, LoadProgress
from .formats.compat import check_pair
from .formats.loader import LoadedModel, load_model

Progress = Callable[[LoadProgress], None]


class Session:
    def __init__(self, target: LoadedModel, draft: LoadedModel | None = None,
                 prompt_cache: PromptCacheConfig | None = None,
                 timings: TimingStore | None = None):
        """timings: where the auto policy's measures of the pair are kept across processes
        (None: the default file beside the models folder; `TimingStore(None)`: nowhere)."""
        from .decoding.prompt_cache import PromptCache

        self.target = target
        self.draft = draft
        self.timings = timings if timings is not None else TimingStore.default()
        # conversations' KV caches between turns; the fingerprint keeps disk entries per pair
        self.prompt_cache = PromptCache(prompt_cache, fingerprint=_fingerprint(target, draft))
        # what draft-free branches learned in earlier answers, per lookup configuration and
        # with or without the draft model's tree (engine.decoding.branch_prior.LookupMemory)
        self.lookup_memory: dict[tuple, LookupMemory] = {}

    @classmethod
    def load(
        cls,
        target_dir: str | Path,
        draft_dir: str | Path | None = None,
        *,
        budget_bytes: int | None = None,
        stream: StreamConfig | None = None,
        progress: Progress | None = None,
        prompt_cache: PromptCacheConfig | None = None,
        timings: TimingStore | None = None,
        **stream_options,
    ) -> Session:
        """Load the pair; raises CanopyError subclasses with person-readable messages.

        budget_bytes: ceiling on target weight bytes resident (None: load the target whole).
        stream: how a streamed target reads its layers (default `StreamConfig()`).
        stream_options: further keywords for `load_streamed_model` (reader).
        prompt_cache: how many conversations keep their KV caches between turns.
        timings: where the pair's measured timings are kept (see __init__).
        """
        report = progress or (lambda e: None)
        stream = stream or StreamConfig()
        if draft_dir is not None:
            check_pair(target_dir, draft_dir)
        report(LoadProgress("target", 0, 2 if draft_dir else 1))
        if budget_bytes is None:
            target = load_model(target_dir)
        else:
            from .streaming.streamed_model import load_streamed_model

            target = load_streamed_model(
                target_dir, budget_bytes, prefetch=stream.prefetch,
                bypass_cache=stream.bypass_cache, read_timeout=stream.read_timeout,
                **stream_options)
        draft = None
        try:
            if draft_dir is not None:
                report(LoadProgress("draft", 1, 2))
                draft = load_model(draft_dir)
            total = 2 if draft_dir else 1
            report(LoadProgress("ready", total, total))
        except BaseException:  # incl. a cancelled load: the IO thread must not outlive us
            _close_target(target)
            raise
        return cls(target, draft, prompt_cache, timings)

    def close(self) -> None:
        """Stop a streamed target's IO thread and drop its layers (a resident pair needs
        nothing); the session cannot generate afterwards."""
        _close_target(self.target)

    def stop_read_ahead(self) -> None:
        """Stop a streamed target's IO thread and drop prefetched layers; the next pass
        restarts it. Called when a generation is cancelled."""
        stop = getattr(getattr(self.target, "model", None), "stop", None)
        if stop is not None:
            stop()

    @property
    def tokenizer(self):
        return self.target.tokenizer

    @property
    def context_length(self) -> int:
        return self.target.context_length

    def encode_chat(self, messages: list[dict], system: str | None = None) -> list[int]:
        """Token ids of a chat (list of {"role", "content"}) with the generation prompt added."""
        if system:
            messages = [{"role": "system", "content": system}, *messages]
        tok = self.tokenizer
        if getattr(tok, "chat_template", None):
            try:
                return list(tok.apply_chat_template(messages, add_generation_prompt=True))
            except Exception as e:  # jinja2 syntax/runtime errors, a template that is no string
                raise ModelError(
                    f"The chat template of {self.target.path} failed ({type(e).__name__}: {e}). "
                    "Fix chat_template in its tokenizer_config.json, or send the prompt without "
                    "the chat template.") from e
        text = "\n".join(f"{m['role']}: {m['content']}" for m in messages) + "\nassistant:"
        return tok.encode(text)

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text)

    def check_length(self, prompt_ids: list[int], max_tokens: int) -> None:
        need = len(prompt_ids) + max_tokens
        if need > self.context_length:
            raise ContextLengthError(
                f"The prompt ({len(prompt_ids)} tokens) plus up to {max_tokens} new tokens "
                f"exceeds the model's context of {self.context_length} tokens. Shorten the "
                "conversation or lower max tokens."
            )

    def generate(
        self,
        prompt_ids: list[int],
        config: GenerationConfig,
        should_stop: Callable[[], bool] | None = None,
        conversation: Hashable | None = None,
        observer: Callable | None = None,
    ) -> Iterator[Event]:
        """Yield PrefillDone, StepEvents, then Finished or Failed (see engine.events).

        conversation: a key (e.g. the chat's id); its KV caches are kept for the next turn,
        which then prefills only what is new (None: a one-off, nothing kept).
        observer: sees each verified step (engine.adapt.record.Recorder).
        """
        from .decoding.generate import generate
        from .decoding.prompt_cache import TurnCache

        self.check_length(prompt_ids, config.max_tokens)
        streamed = hasattr(self.target.model, "io_stats")  # a StreamedModel
        use_blas_threads(streamed)  # every core resident; one left to the IO thread streamed
        if config.tree.verify_cost_prior is None:  # the platform's default (engine.config)
            prior = platform_verify_cost_prior(streamed)
            config = replace(config, tree=replace(config.tree, verify_cost_prior=prior))
        turn = TurnCache(self.prompt_cache, conversation) if conversation is not None else None
        # the tree policy's measures of this pair, stored by earlier processes (and kept)
        with_draft = self.draft is not None and config.mode == "tree"
        timings = self.timings.entry(self.target, self.draft, config.draft_vocab) if (
            with_draft) else None
        key = (config.lookup, with_draft)
        if key not in self.lookup_memory:
            self.lookup_memory[key] = LookupMemory.for_lookup(config.lookup)
        memory = self.lookup_memory[key]
        try:
            yield from generate(self.target, self.draft, prompt_ids, config, should_stop, turn,
                                observer, timings, memory)
        finally:
            if should_stop is not None and should_stop():
                self.stop_read_ahead()  # cancelled: no reads for a pass that will not come

    def chat(
        self,
        messages: list[dict],
        config: GenerationConfig,
        should_stop: Callable[[], bool] | None = None,
        system: str | None = None,
        conversation: Hashable | None = None,
        observer_for: Callable[[list[int]], Callable] | None = None,
    ) -> Iterator[Event]:
        """`generate` on the chat's token ids. observer_for(prompt_ids) makes the step observer
        (e.g. `Adaptation.recorder`, so chats record for adaptation)."""
        ids = self.encode_chat(messages, system)
        observer = observer_for(ids) if observer_for is not None else None
        yield from self.generate(ids, config, should_stop, conversation, observer)


def _close_target(target) -> None:
    close = getattr(target, "close", None)
    if close is not None:
        close()


def _fingerprint(target: LoadedModel, draft: LoadedModel | None) -> str:
    """The pair's folders and their files' sizes and times: rebuilt weights, new fingerprint."""
    parts = []
    for model in (target, draft):
        if model is None:
            continue
        folder = Path(model.path)
        files = sorted(folder.glob("*.safetensors")) + [folder / "config.json"]
        stats = [(f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files if f.exists()]
        parts.append(f"{folder}:{stats}")
    return "|".join(parts)
