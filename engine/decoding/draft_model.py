"""The resident draft model and its KV cache, kept in step with the committed sequence (the
drafters in engine.decoding.drafters grow their trees with it)."""

from __future__ import annotations

import time

import mlx.core as mx
import numpy as np

from ..config import SamplingConfig
from ..models.cache import KVCache, make_cache
from .draft_vocab import DraftVocab
from .sampling import target_distribution
from .tree import TokenTree


class DraftModel:
    """The resident draft model and its KV cache, kept in step with the committed sequence.

    Its cache holds the committed tokens it has processed; `pending` are committed tokens it has
    not seen yet (accepted nodes it never expanded). Tree nodes it expands are appended to the
    cache in expansion order (`slot_nodes`) until `commit` keeps the accepted ones.

    Padded vocabularies may differ in size (`target_vocab`): the draft only proposes ids the
    target has, and target tokens beyond the draft's rows are fed to it as id 0 (an embedding
    lookup out of range reads arbitrary memory; the target verifies everything anyway).
    """

    def __init__(self, model, sampling: SamplingConfig, prefill_chunk: int = 256,
                 target_vocab: int | None = None, measured: dict | None = None,
                 subset: DraftVocab | None = None):
        self.model = model
        self.subset = subset  # the rows the draft scores (draft_vocab), or None: all of them
        self.measured = {} if measured is None else measured  # kept across answers
        self.sampling = sampling
        self.prefill_chunk = prefill_chunk
        self.vocab = model.args.vocab_size
        self.proposable = min(self.vocab, target_vocab or self.vocab)
        self.cache: list[KVCache] = make_cache(len(model.layers))
        self.pending: list[int] = []
        self.slot_nodes: list[int] = []
        self.seconds = 0.0

    def forward(self, tokens: list[int], cache, positions=None, mask=None) -> mx.array:
        """Logits (1, L, draft vocabulary) of `tokens`: over the subset's rows when there is
        one (local index j = token `ids[j]`), else over every row."""
        x = mx.array([self.feedable(tokens)])
        if self.subset is None:
            return self.model(x, cache=cache, positions=positions, mask=mask)
        return self.subset.logits(self.model.hidden(x, cache, positions, mask))

    @property
    def to_ids(self):
        """Local draft-vocabulary indices -> token ids (None: they are the ids). Looked up at
        call time: the subset grows while a carried frontier still holds older indices."""
        return None if self.subset is None else (lambda local: self.subset.ids[local])

    def token_id(self, local: int) -> int:
        return local if self.subset is None else int(self.subset.ids[local])

    def over_vocab(self, q: np.ndarray) -> np.ndarray:
        """A draft distribution over token ids (zero outside the subset): the q that sampled
        acceptance must use for a token drawn from `q`."""
        if self.subset is None:
            return q
        full = np.zeros(self.proposable, dtype=np.float64)
        full[self.subset.ids] = q
        return full

    def distribution(self, logits: mx.array) -> mx.array:
        """Draft probabilities: the sampling distribution, or softmax (confidence) if greedy."""
        if self.subset is None and self.proposable < self.vocab:  # rows the target lacks
            logits = logits[..., : self.proposable]
        if self.sampling.greedy:
            return mx.softmax(logits.astype(mx.float32), axis=-1)
        return target_distribution(logits, self.sampling)

    def prefill(self, prompt_ids: list[int]) -> None:
        """Deferred: the prompt tokens before the last (the first step's root) that the cache
        does not hold yet (one kept from an earlier turn, engine.decoding.prompt_cache, holds
        the first `offset`) become pending; the first draft forward catches up on them, after
        the target's first token."""
        self.pending = list(prompt_ids[self.offset : -1])
        if self.subset is not None:  # the conversation's own tokens stay draftable
            self.subset.include(prompt_ids)

    def forward_seconds(self, token: int, fresh: bool = False) -> float:
        """Seconds of one 1-token forward on a scratch cache (this cache untouched): the cost
        model's first measure of d, taken before any catch-up on pending tokens; timed once per
        loaded draft (later answers reuse it: 0 s of draft work) unless `fresh`."""
        key = "forward_1" if self.subset is None else f"forward_1/rows={self.subset.low}"
        if fresh or key not in self.measured:
            scratch = make_cache(len(self.model.layers))
            t0 = time.perf_counter()
            mx.eval(self.forward([token], scratch))
            self.measured[key] = time.perf_counter() - t0
        return self.measured[key]

    def layers_seconds(self, token: int, fresh: bool = False) -> float:
        """A lower bound of a 1-token forward's seconds for a few layers' work: one layer's
        marginal seconds (the first two layers minus the first, after a warm-up run that may
        compile kernels: each eval's fixed cost cancels) times the number of layers; the
        embedding, final norm and head left out. A draft that cannot win even at this bound is
        never run whole (TreeDrafter.time_draft); kept like `forward_seconds`."""
        layers = self.model.layers
        if len(layers) < 2:
            return 0.0
        if fresh or "layers_1" not in self.measured:
            x = self.model.embed(mx.array([self.feedable([token])]))
            mx.eval(x)

            def run(count: int) -> float:
                h, t0 = x, time.perf_counter()
                for layer, c in zip(layers[:count], make_cache(count)):
                    h = layer(h, None, c)
                mx.eval(h)
                return time.perf_counter() - t0

            run(1)  # warm-up
            one = run(1)
            self.measured["layers_1"] = max(0.0, run(2) - one) * len(layers)
        return self.measured["layers_1"]

    def feedable(self, ids: list[int]) -> list[int]:
        """`ids` with any id beyond the draft's rows (a target's padding token) replaced by 0."""
        return [t if t < self.vocab else 0 for t in ids]

    @property
    def offset(self) -> int:
        return self.cache[0].offset

    def catch_up(self, tokens: int | None = None) -> float:
        """Feed the first `tokens` (None: all) pending committed tokens (they pile up while the
        drafter falls back to ar, and hold the deferred prompt); returns the seconds it took."""
        t0 = time.perf_counter()
        n = len(self.pending) if tokens is None else min(tokens, len(self.pending))
        chunk, self.pending = self.pending[:n], self.pending[n:]
        if self.subset is not None:
            self.subset.include(chunk)
        chunk = self.feedable(chunk)
        for i in range(0, len(chunk), self.prefill_chunk):  # the head is never evaluated
            self.model(mx.array([chunk[i : i + self.prefill_chunk]]), cache=self.cache)
            mx.eval([c.keys for c in self.cache])
        return time.perf_counter() - t0

    def start(self, root: int) -> mx.array:
        """Feed pending tokens + root as a chain; returns the root's draft distribution."""
        if len(self.pending) >= self.prefill_chunk:
            self.catch_up()
        chain = self.pending + [root]
        if self.subset is not None:  # target tokens (bonus, corrections) join the subset
            self.subset.include(chain)
        self.pending = []
        self.slot_nodes = [0]
        return self.distribution(self.forward(chain, self.cache)[0, -1])

    def expand(self, tree: TokenTree, nodes: list[int], committed: int) -> mx.array:
        """One draft forward over several tree nodes; returns their distributions (len, vocab)."""
        keys = self.slot_nodes + nodes
        mask = tree.attention_mask(committed, nodes, keys)
        logits = self.forward([tree.tokens[i] for i in nodes], self.cache,
                              tree.positions(committed, nodes), mask)
        self.slot_nodes = keys
        return self.distribution(logits[0])

    def commit(self, tree: TokenTree, path: list[int], committed: int,
               extra_slots: list[int] = ()) -> None:
        """Keep committed + the accepted nodes this cache processed (+ `extra_slots`, drafted
        past the path during verification); accepted nodes it never processed become pending."""
        if not self.slot_nodes:  # nothing drafted this step (ar fallback): catch up later
            self.pending = self.pending + [tree.tokens[n] for n in path]
            return
        slot = {node: committed + i for i, node in enumerate(self.slot_nodes)}
        seen = [n for n in path if n in slot]  # a prefix of the path
        for c in self.cache:
            c.keep(committed, [slot[n] for n in seen] + list(extra_slots))
        self.pending = [tree.tokens[n] for n in path[len(seen) :]]
        self.slot_nodes = []

    def rollback(self, committed: int) -> None:
        """Drop any uncommitted tree entries (used when a step is abandoned)."""
        for c in self.cache:
            c.trim(c.offset - min(c.offset, committed))
        self.slot_nodes = []
