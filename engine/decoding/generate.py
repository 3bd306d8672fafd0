"""The decode loop: a generator of typed events, shared by GUI, CLI, benchmark and tests.

Each step: the drafter proposes a tree hanging off the root (the last committed token); the
target verifies all of it in one forward with the tree mask; a pure acceptance rule picks the
path and the target's own next token; both KV caches keep just the accepted path.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import mlx.core as mx
import numpy as np

from ..config import GenerationConfig
from ..costmodel.policy import StepPolicy
from ..costmodel.timing_store import PairEntry, PairTiming
from ..errors import CanopyError
from ..events import Event, Failed, Finished, PrefillDone, StepEvent
from ..runtime import failure_message
from .ar_steps import ArAhead
from .branch_prior import LookupMemory
from .draft_model import DraftModel
from .draft_vocab import make_subset, special_ids
from .drafters import ChainDrafter, NoDrafter, StepResult, TreeDrafter
from .lookahead import LookaheadDrafter
from .prompt_cache import TurnCache
from .prompt_lookup import LookupDrafter
from .sampling import target_distribution
from .stats import StatsRecorder
from .verify import accept_greedy, accept_sampled


def make_drafter(draft, config: GenerationConfig, rng: np.random.Generator,
                 target_vocab: int | None = None, special: list[int] = (),
                 stored: PairTiming | None = None, lookup_memory: LookupMemory | None = None):
    """The drafter of `config.mode`; `stored`: the pair's stored timing (the tree policy starts
    from it, engine.costmodel.timing_store); `lookup_memory`: what draft-free branches learned
    in the session's earlier answers (they start from it and add to it)."""
    if config.mode == "lookahead":
        return LookaheadDrafter(config.lookahead)
    sources = config.lookup.sources if config.mode == "tree" else ()
    if config.mode == "ar" or draft is None:
        if config.mode == "tree" and sources:  # no draft model: the draft-free branches alone
            return LookupDrafter(NoDrafter(), config.lookup, config.tree.verify_cost_prior,
                                 lookup_memory)
        if config.mode != "ar":
            raise CanopyError(
                f"Mode {config.mode!r} needs a draft model; choose one or use --mode ar "
                "(or --mode lookahead, which needs none).")
        return NoDrafter()
    subset = make_subset(draft.model, config.draft_vocab, special, target_vocab)
    model = DraftModel(draft.model, config.sampling, config.prefill_chunk, target_vocab,
                       getattr(draft, "measured", None), subset)
    if config.mode == "chain":
        return ChainDrafter(model, config.chain_length, rng)
    tree = config.tree
    policy = StepPolicy(tree, adapt_threshold=tree.adaptive, auto=tree.adaptive and tree.auto,
                        time_draft=True, stored=stored, max_tokens=config.max_tokens)
    # root_first: the first token is the target's alone, the draft's prefill waits behind it
    drafter = TreeDrafter(model, config.tree, policy, root_first=True)
    return LookupDrafter(drafter, config.lookup, memory=lookup_memory) if sources else drafter


def policy_of(drafter) -> StepPolicy | None:
    """The tree drafter's policy (inside draft-free branches too), else None."""
    policy = getattr(drafter, "policy", None)
    return policy if policy is not None else getattr(getattr(drafter, "inner", None), "policy",
                                                     None)


def keep_timing(drafter, timings: PairEntry | None) -> dict:
    """Store what the policy measured (for the next process); the stats' note of where the
    draft's timing came from."""
    policy = policy_of(drafter)
    if timings is None or policy is None:
        return {}
    measured = policy.measured_timing()
    if measured is not None:
        timings.keep(measured)
    return {"draft_timing_stored": timings.stored is not None}


def next_root_only(drafter) -> bool:
    """Is the drafter's next step certainly root-only, whatever this step's feedback says?
    (Drafters without the method never promise it.)"""
    promise = getattr(drafter, "next_root_only", None)
    return promise is not None and promise()


def pipeline_counts(drafter) -> dict:
    if not hasattr(drafter, "wait_tokens"):
        return {}
    return {"draft_tokens_during_io": drafter.wait_tokens,
            "draft_tokens_during_io_used": drafter.wait_tokens_used,
            "draft_catch_up_tokens_during_io": drafter.wait_catch_up_tokens}


def io_snapshot(model):
    stats = getattr(model, "io_stats", None)
    return stats() if stats is not None else None


def waited(before, after) -> float:
    """Seconds of a pass spent waiting for layers, draft work during the waits included."""
    if before is None or after is None:
        return 0.0
    return (after.io_wait_seconds - before.io_wait_seconds) + (
        after.hook_seconds - before.hook_seconds)


def wait_split(before, after) -> tuple[float, float | None]:
    """(seconds of draft work during the pass's waits, seconds the IO thread read during the
    step; None when the target is not streamed)."""
    if before is None or after is None:
        return 0.0, None
    return after.hook_seconds - before.hook_seconds, after.io_seconds - before.io_seconds


def check_finite(logits: mx.array, target) -> None:
    """NaN/Inf scores (broken weights, or overflow in float16) would be emitted as garbage."""
    if not mx.all(mx.isfinite(logits)).item():
        raise nonfinite_error(target)


def nonfinite_error(target) -> CanopyError:
    return CanopyError(
        f"The model {target.path} produced NaN or Inf scores: its weights hold NaN/Inf "
        "values (or overflow in their dtype). Re-download or re-convert the model.")


def generate(
    target,
    draft,
    prompt_ids: list[int],
    config: GenerationConfig,
    should_stop: Callable[[], bool] | None = None,
    turn: TurnCache | None = None,
    observer: Callable | None = None,
    timings: PairEntry | None = None,
    lookup_memory: LookupMemory | None = None,
) -> Iterator[Event]:
    """Yield PrefillDone, one StepEvent per target pass, then Finished (or Failed).

    With greedy sampling the emitted ids equal the target's own greedy decoding in every mode,
    up to near ties in half precision: fp16/bf16 logits of a many-token tree pass and of a
    one-token pass differ in the last bits, so where the two best tokens are that close the
    argmax (and the rest of the text) may differ (tests/engine/test_demo_half_precision.py).
    `turn`: the conversation's prompt cache; only the prompt past its common prefix is
    prefilled, and the caches go back to it when the answer is complete.
    observer(tree, path, bonus, logits), if given, sees each verified step (engine.adapt.record).
    `timings`: the pair's entry in the timing store; the tree policy starts from its stored
    measures and what it measured is kept there at the end. `lookup_memory`: what draft-free
    branches learned in the session's earlier answers (engine.decoding.branch_prior).
    """
    try:
        yield from _generate(target, draft, prompt_ids, config, should_stop or (lambda: False),
                             turn or TurnCache(), observer, timings, lookup_memory)
    except CanopyError as e:
        yield Failed(str(e))
    except Exception as e:  # a readable message for the GUI/CLI; tests see the text
        yield Failed(failure_message(e))


def _generate(target, draft, prompt_ids, config, should_stop, turn, observer=None,
              timings=None, lookup_memory=None):
    if not prompt_ids:
        raise CanopyError("The prompt is empty: type something first.")
    sampling = config.sampling
    rng = np.random.default_rng(sampling.seed)
    tokenizer = target.tokenizer
    eos = set(getattr(tokenizer, "eos_token_ids", None) or [])
    drafter = make_drafter(draft, config, rng, target.model.args.vocab_size,
                           special_ids(tokenizer),
                           timings.stored if timings is not None else None, lookup_memory)
    model = target.model
    cache = turn.target_cache(target.num_layers, prompt_ids)
    turn.attach_draft(drafter, prompt_ids)
    # compute-IO pipeline: a streamed target runs draft work while it waits for its layers
    waiting_work = getattr(drafter, "work_while_waiting", None)
    overlap = {"while_waiting": waiting_work} if config.pipeline and waiting_work and hasattr(
        model, "io_stats") else {}
    record = StatsRecorder(config.mode, len(prompt_ids), io_snapshot(model))

    t0 = time.perf_counter()
    held = list(prompt_ids[:-1])  # token ids whose keys/values the target cache holds
    body = held[cache[0].offset if cache else 0 :]
    for i in range(0, len(body), config.prefill_chunk):
        model(mx.array([body[i : i + config.prefill_chunk]]), cache=cache)
        mx.eval([c.keys for c in cache])
    drafter.prefill(prompt_ids)
    record.prefill_done(time.perf_counter() - t0, io_snapshot(model))
    yield PrefillDone(len(prompt_ids), record.prefill_seconds)

    detok = tokenizer.detokenizer
    detok.reset()
    committed, root = len(held), prompt_ids[-1]
    generated: list[int] = []
    reason = "length"
    step = 0
    # root-only passes launched a step ahead (resident target)
    wants_argmax = getattr(drafter, "wants_target_argmax", False)  # sampled: an argmax too
    usable = ArAhead.usable(model) and observer is None  # observer: the logits
    fast = ArAhead(model, cache, sampling, rng, wants_argmax) if usable else None
    branching = hasattr(drafter, "pruned")  # may hang draft-free branches off a root-only step
    ahead = None  # the root-only pass launched during the previous step (ar_steps.Launched)
    while len(generated) < config.max_tokens:
        if should_stop():
            reason = "cancelled"
            break
        step_start = time.perf_counter()
        io_before = io_snapshot(model)  # the policy's wait of this pass (events: since last step)
        done = False
        try:
            proposal = drafter.propose(root, committed)
            tree = proposal.tree
            t_drafted = time.perf_counter()
            argmax = None
            if fast is not None and len(tree) == 1:
                # root only: start the next pass on this one's lazy token before reading it
                # (not at step 0: the first token goes out before any pass ahead starts)
                now, ahead = ahead if ahead is not None else fast.launch(root), None
                more = step > 0 and len(generated) + 1 < config.max_tokens
                if more and next_root_only(drafter) and (sampling.greedy or not branching):
                    ahead = fast.launch(now.token)
                bonus, ahead = fast.read(now, ahead)
                if not now.finite.item():  # computed with the token: no extra wait
                    raise nonfinite_error(target)
                path = [0]
                if sampling.greedy or now.argmax is not None:
                    argmax = [bonus if sampling.greedy else now.argmax.item()]
            elif ahead is not None:  # greedy: draft-free branches off a root whose pass ran ahead
                now, ahead = ahead, None
                first, _ = fast.read(now, None)
                if not now.finite.item():
                    raise nonfinite_error(target)
                proposal = drafter.pruned(proposal, first)  # the one branch that can be accepted
                tree, argmax = proposal.tree, [first]
                if len(tree) > 1:  # the root sits in the cache: verify the rest after it
                    rest = range(1, len(tree))
                    logits = model(mx.array([tree.tokens[1:]]), cache=cache,
                                   positions=tree.positions(committed, rest),
                                   mask=tree.attention_mask(committed, rest))[0]
                    check_finite(logits, target)
                    argmax += mx.argmax(logits, axis=-1).tolist()
                path, bonus = accept_greedy(tree.tokens, tree.parents, argmax)
            else:
                tokens = mx.array([tree.tokens])
                if proposal.chain:  # a chain needs no tree mask
                    logits = model(tokens, cache=cache, **overlap)[0]  # (n, vocab)
                else:
                    logits = model(
                        tokens, cache=cache, positions=tree.positions(committed),
                        mask=tree.attention_mask(committed), **overlap,
                    )[0]
                check_finite(logits, target)
                if sampling.greedy or getattr(drafter, "wants_target_argmax", False):
                    argmax = mx.argmax(logits, axis=-1).tolist()
                if sampling.greedy:
                    path, bonus = accept_greedy(tree.tokens, tree.parents, argmax)
                else:
                    probs = np.array(target_distribution(logits, sampling))
                    path, bonus = accept_sampled(tree.tokens, tree.parents, probs,
                                                 proposal.proposal_probs, rng)
            t_verified = time.perf_counter()
            io_after = io_snapshot(model)
            io_wait = waited(io_before, io_after)
            if observer is not None:  # the target's logits are free here (online distillation)
                observer(tree, path, bonus, logits)
            if len(tree) > 1:  # a root-only pass already sits in place (a pass ahead may follow)
                for c in cache:
                    c.keep(committed, [committed + i for i in path])
            drafter.commit(tree, path, bonus, committed)
            done = True
        finally:
            if not done:  # abandoned mid-step: both caches back to the committed prefix
                for c in cache:
                    c.trim(c.offset - committed)
                drafter.rollback(committed)
        step_seconds = time.perf_counter() - step_start
        drafter.feedback(StepResult(proposal, tuple(path), bonus, step_seconds,
                                    t_drafted - step_start, t_verified - t_drafted, io_wait,
                                    None if argmax is None else tuple(argmax),
                                    *wait_split(io_before, io_after)))
        committed += len(path)
        held.extend(tree.tokens[i] for i in path)
        root = bonus

        emitted = [tree.tokens[i] for i in path[1:]] + [bonus]
        from_draft = [True] * (len(path) - 1) + [False]
        keep = len(emitted)
        for j, t in enumerate(emitted):
            if t in eos:
                keep, reason = j, "eos"
                break
        keep = min(keep, config.max_tokens - len(generated))
        emitted, from_draft = emitted[:keep], from_draft[:keep]
        generated.extend(emitted)
        token_texts = []
        for t in emitted:
            detok.add_token(t)
            token_texts.append(detok.last_segment)
        event = StepEvent(
            index=step,
            mode=config.mode,
            tree_tokens=tuple(tree.tokens),
            tree_parents=tuple(tree.parents),
            tree_probs=tuple(tree.probs),
            tree_texts=tuple(tokenizer.decode([t]) for t in tree.tokens)
            if config.tree_texts else (),
            accepted=tuple(path),
            bonus_token=bonus if keep == len(path) else None,
            token_ids=tuple(emitted),
            from_draft=tuple(from_draft),
            text="".join(token_texts),
            tree_depths=tuple(tree.depth),
            tree_path_probs=tuple(tree.path_prob),
            token_texts=tuple(token_texts),
            draft_seconds=t_drafted - step_start,
            verify_seconds=t_verified - t_drafted,
            threshold=drafter.threshold,
            tree_sources=tuple(tree.sources),
            **record.io_fields(io_snapshot(model)),
        )
        record.step(event)
        yield event
        step += 1
        if reason == "eos":
            break
    for c in cache:  # a pass launched ahead for a step that never ran
        c.trim(c.offset - committed)
    detok.finalize()  # Finished.text is the whole answer, including a held-back final segment
    kept = turn.finish(cache, held, drafter)
    kept |= keep_timing(drafter, timings)
    stats = record.finish(len(generated), io_snapshot(model), pipeline_counts(drafter) | kept)
    yield Finished(reason, detok.text, tuple(generated), stats)
