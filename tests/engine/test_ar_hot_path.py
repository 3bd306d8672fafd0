"""Target-alone decoding at mlx-lm's speed without changing what it emits: the pass launched
ahead (async_eval) keeps greedy and seeded sampled output equal to a plain one-token loop, the
policy's ar fallback makes no draft-model calls, and the draft's prefill waits until after the
first token."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest

from engine.config import GenerationConfig, LookupConfig, SamplingConfig, TreeConfig
from engine.costmodel.policy import PROBE_FIRST, StepPolicy
from engine.decoding import ar_steps
from engine.decoding.drafters import DraftModel, Proposal, StepResult
from engine.decoding.generate import generate
from engine.decoding.sampling import sample, target_distribution
from engine.decoding.tree import TokenTree
from engine.events import Failed, Finished, StepEvent
from engine.formats.loader import LoadedModel
from engine.models.cache import make_cache

PROMPT = [5, 17, 42, 99, 3, 250, 7, 7, 64]


GREEDY = SamplingConfig()


def reference(model, prompt, n, sampling=GREEDY, eos=()):
    """The plain loop: one forward per token, read at once (greedy argmax or one seeded
    inverse-CDF draw per token, as `sample` does)."""
    rng = np.random.default_rng(sampling.seed)
    cache = make_cache(len(model.layers))
    logits = model(mx.array([prompt]), cache=cache)[0, -1]
    out = []
    while len(out) < n:
        if sampling.greedy:
            token = int(mx.argmax(logits).item())
        else:
            token = sample(np.array(target_distribution(logits[None], sampling))[0], rng)
        if token in eos:  # generate() does not emit the EOS token
            break
        out.append(token)
        logits = model(mx.array([[token]]), cache=cache)[0, -1]
    return out


def finished(events) -> Finished:
    assert not any(isinstance(e, Failed) for e in events), events[-1]
    return events[-1]


class Counting:
    """A model wrapper that counts forward calls (and forwards everything else)."""

    def __init__(self, model):
        self.model, self.calls = model, 0

    def __call__(self, *args, **kw):
        self.calls += 1
        return self.model(*args, **kw)

    def __getattr__(self, name):
        return getattr(self.model, name)


class NoEos:
    """A tokenizer that never ends the answer (a long run on a tiny random model)."""

    eos_token_ids: list[int] = []

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def __getattr__(self, name):
        return getattr(self.tokenizer, name)


def counted(loaded: LoadedModel) -> tuple[LoadedModel, Counting]:
    wrapper = Counting(loaded.model)
    return LoadedModel(**{**vars(loaded), "model": wrapper}), wrapper


@pytest.mark.parametrize("prompt", [PROMPT, PROMPT[:1]])
def test_greedy_ar_equals_the_plain_loop_and_launches_each_pass_once(loaded_pair, prompt,
                                                                     monkeypatch):
    target = loaded_pair["target"]
    launches = []
    launch = ar_steps.ArAhead.launch
    monkeypatch.setattr(ar_steps.ArAhead, "launch",
                        lambda self, tok: launches.append(1) or launch(self, tok))
    counting, wrapper = counted(target)
    fin = finished(list(generate(counting, None, prompt, GenerationConfig(mode="ar",
                                                                          max_tokens=40))))
    want = reference(target.model, prompt, 40, eos=set(target.tokenizer.eos_token_ids or []))
    assert list(fin.token_ids) == want
    # every pass went through the launch-ahead path; none is wasted at max_tokens, one after
    # EOS (like mlx-lm: the pass ahead was started before the EOS token was read)
    eos = fin.reason == "eos"
    assert fin.stats.target_passes == len(want) + eos
    assert len(launches) == fin.stats.target_passes + eos
    assert wrapper.calls == (len(prompt) > 1) + len(launches)


def test_seeded_sampled_ar_equals_the_plain_loop(loaded_pair):
    target = loaded_pair["target"]
    sampling = SamplingConfig(temperature=0.8, top_p=0.9, seed=1234)
    cfg = GenerationConfig(mode="ar", max_tokens=40, sampling=sampling)
    fin = finished(list(generate(target, None, PROMPT, cfg)))
    want = reference(target.model, PROMPT, 40, sampling,
                     eos=set(target.tokenizer.eos_token_ids or []))
    assert list(fin.token_ids) == want
    again = finished(list(generate(target, None, PROMPT, cfg)))
    assert again.token_ids == fin.token_ids


def test_stop_and_eos_leave_no_pass_ahead_in_the_cache(loaded_pair, monkeypatch):
    """A pass launched ahead for a step that never runs is trimmed (the cache ends at the
    committed tokens), and the emitted ids are the plain loop's prefix."""
    target = loaded_pair["target"]
    caches = []
    import engine.decoding.prompt_cache as gen

    real = gen.make_cache
    monkeypatch.setattr(gen, "make_cache", lambda n: caches.append(real(n)) or caches[-1])
    want = reference(target.model, PROMPT, 30)
    steps = 0

    def stop():
        return steps >= 12

    events = []
    for e in generate(target, None, PROMPT, GenerationConfig(mode="ar", max_tokens=30), stop):
        steps += isinstance(e, StepEvent)
        events.append(e)
    fin = finished(events)
    assert fin.reason == "cancelled" and list(fin.token_ids) == want[:12]
    assert caches[0][0].offset == len(PROMPT) - 1 + 12


@pytest.mark.parametrize("sources", [(), None])  # draft tree alone; with draft-free branches
def test_policy_ar_fallback_makes_no_draft_calls(loaded_pair, sources, monkeypatch):
    """A useless draft: the policy falls back to ar; while there, the draft model runs only
    for probes (steps the policy planned to speculate), and every token equals the target's."""
    plain = loaded_pair["target"]
    target = LoadedModel(**{**vars(plain), "tokenizer": NoEos(plain.tokenizer)})
    draft, wrapper = counted(loaded_pair["unrelated"])
    plans = []
    plan = StepPolicy.plan
    monkeypatch.setattr(StepPolicy, "plan",
                        lambda self, pending=0: plans.append(plan(self, pending)) or plans[-1])
    calls = []
    events = []
    lookup = {} if sources is None else {"lookup": LookupConfig(sources=sources)}
    cfg = GenerationConfig(mode="tree", max_tokens=80, **lookup)
    for e in generate(target, draft, PROMPT, cfg):
        if isinstance(e, StepEvent):
            calls.append(wrapper.calls)
        events.append(e)
    fin = finished(events)
    assert list(fin.token_ids) == reference(target.model, PROMPT, 80)
    # the first step is the target's alone (no plan): the draft's prefill waits until after it
    assert calls[0] == 0 and len(plans) == len(calls) - 1
    # a root-only plan marked probe: one 1-token draft forward was timed before it (or its
    # timing reused); at most once, then once per timing recheck (every PROBE_FIRST ar steps);
    # every other ar step leaves the draft alone
    at_ar = [k for k in range(1, len(calls)) if not plans[k - 1].speculate]
    timed = [k for k in at_ar if plans[k - 1].probe]
    assert len(at_ar) > 30  # the policy sat at ar for most of the run
    assert len(timed) <= 1 + len(at_ar) // PROBE_FIRST
    for k in at_ar:
        assert calls[k] - calls[k - 1] <= (k in timed), f"draft called during ar step {k}"


def test_a_draft_whose_layers_alone_lose_is_never_run_whole(loaded_pair, monkeypatch):
    """The lower bound of d(1) from one timed layer already shows the draft cannot win: no whole
    draft forward runs (no timing forward, no catch-up, no tree), and the ids are ar's."""
    plain = loaded_pair["target"]
    target = LoadedModel(**{**vars(plain), "tokenizer": NoEos(plain.tokenizer)})
    draft, wrapper = counted(loaded_pair["unrelated"])
    monkeypatch.setattr(DraftModel, "layers_seconds", lambda self, token, fresh=False: 10.0)
    cfg = GenerationConfig(mode="tree", max_tokens=40, lookup=LookupConfig(sources=()))
    fin = finished(list(generate(target, draft, PROMPT, cfg)))
    assert list(fin.token_ids) == reference(target.model, PROMPT, 40)
    assert wrapper.calls == 0
    assert fin.stats.target_passes == 40


class _ClockedModel:
    """A stand-in draft whose every layer call costs `LAYER` seconds of a fake clock, and whose
    embedding costs `EMBED`: what layers_seconds may count (layers) and may not (the rest)."""

    LAYER, EMBED = 0.01, 0.5

    def __init__(self, layers: int):
        self.now = 0.0
        self.calls = 0
        self.args = type("Args", (), {"vocab_size": 300})()
        self.layers = [self.layer] * layers

    def clock(self) -> float:
        return self.now

    def embed(self, x):
        self.now += self.EMBED
        return mx.zeros((1, x.shape[1], 4))

    def layer(self, h, mask, cache):
        self.calls += 1
        self.now += self.LAYER
        return h


def test_the_layers_bound_is_one_layers_marginal_seconds_times_the_layers(monkeypatch):
    """The bound is one layer's seconds (two layers minus one: fixed per-eval costs cancel)
    times the layer count, without the embedding; timed once, then kept."""
    from engine.decoding import draft_model

    fake = _ClockedModel(layers=24)
    monkeypatch.setattr(draft_model, "time", type("T", (), {"perf_counter": fake.clock}))
    model = DraftModel(fake, GREEDY, measured={})
    bound = model.layers_seconds(5)
    assert bound == pytest.approx(24 * _ClockedModel.LAYER)
    calls = fake.calls
    assert model.layers_seconds(5) == bound and fake.calls == calls  # kept, not re-timed
    assert model.layers_seconds(5, fresh=True) == pytest.approx(bound) and fake.calls > calls


def test_next_is_ar_promises_only_what_the_next_plan_does():
    """Whenever the policy promises a root-only next step, the next plan is root-only, over a
    history with probes (bad draft) and one bound by timing (draft as slow as the pass)."""
    for draft_s, v0 in [(0.05, 1.0), (0.12, 0.1)]:
        policy = StepPolicy(TreeConfig())
        promised = kept = 0
        promise = False
        for _ in range(400):
            plan = policy.plan()
            if promise:
                assert not plan.speculate
                kept += 1
            n = plan.max_nodes if plan.speculate else 1
            tree = TokenTree.with_root(0)
            for i in range(1, n):
                tree.add(i, 0, 0.1)
            forwards = [(n, draft_s)] if plan.speculate else []
            d = draft_s if plan.speculate else 0.0
            promise = policy.next_is_ar()
            promised += promise
            policy.observe(StepResult(Proposal(tree, [None] * n, chain=n == 1, forwards=forwards,
                                               probe=plan.probe), (0,), 7, d + v0, d, v0))
        assert policy.mode == "ar" and promised > 300 and kept == promised - promise


def test_ttft_is_in_the_stats_json_and_spans_prefill_and_the_first_step(loaded_pair):
    fin = finished(list(generate(loaded_pair["target"], None, PROMPT,
                                 GenerationConfig(mode="ar", max_tokens=8))))
    d = fin.stats.to_dict()
    assert d["ttft_seconds"] == fin.stats.ttft_seconds
    assert fin.stats.prefill_seconds < d["ttft_seconds"]
    assert d["ttft_seconds"] < fin.stats.prefill_seconds + fin.stats.decode_seconds


def test_speed_bench_reads_mlx_lm_in_its_own_process(tiny_dir):
    """The baseline row comes from mlx-lm's own command; prompts are cut to the asked lengths."""
    from engine.bench.speed import prompt_texts, run_mlx_lm
    from engine.formats.loader import load_model

    tokenizer = load_model(tiny_dir).tokenizer
    texts = prompt_texts(tokenizer, (16, 300))
    assert abs(len(tokenizer.encode(texts[300])) - 300) <= 8  # re-encoding a cut may merge
    row = run_mlx_lm(tiny_dir, texts[16], 6)
    assert abs(row["prompt_tokens"] - len(tokenizer.encode(texts[16]))) <= 1
    assert row["ttft_seconds"] > 0 and row["decode_tokens_per_second"] > 0
    assert 1 <= row["generated_tokens"] <= 6


def test_sampled_passes_ahead_are_redone_when_the_device_pick_misses(loaded_pair, monkeypatch):
    """The device's float32 inverse CDF may miss the float64 reference at a boundary: force
    misses and check the pass ahead is redone and the seeded output is unchanged."""
    target = loaded_pair["target"]
    real = ar_steps.sample_at_on_device
    calls = []

    def sometimes_wrong(probs, u):
        calls.append(1)
        token = real(probs, u)
        return (token + 1) % probs.shape[-1] if len(calls) % 3 == 0 else token

    monkeypatch.setattr(ar_steps, "sample_at_on_device", sometimes_wrong)
    redone = []
    read = ar_steps.ArAhead.read

    def counting_read(self, now, ahead):
        out = read(self, now, ahead)
        redone.append(self.redone)
        return out

    monkeypatch.setattr(ar_steps.ArAhead, "read", counting_read)
    sampling = SamplingConfig(temperature=0.9, seed=77)
    fin = finished(list(generate(target, None, PROMPT,
                                 GenerationConfig(mode="ar", max_tokens=30, sampling=sampling))))
    want = reference(target.model, PROMPT, 30, sampling,
                     eos=set(target.tokenizer.eos_token_ids or []))
    assert list(fin.token_ids) == want
    assert redone[-1] >= 3


@pytest.mark.parametrize("draft_s, slow", [(0.2, True), (0.005, False)])
def test_one_timed_draft_forward_decides_before_any_tree(draft_s, slow):
    """After the first (root-only) step the policy asks for one timed 1-token draft forward; a
    draft too slow to win even with perfect acceptance sends it to ar at once (no catch-up, no
    tree), a fast one goes on to its first tree."""
    policy = StepPolicy(TreeConfig(), time_draft=True)
    root = Proposal(TokenTree.with_root(0), [None], chain=True)
    for _ in range(3):  # root-only until a few of ar's passes are timed
        assert not policy.wants_draft_timing()
        policy.observe(StepResult(root, (0,), 7, 0.1, 0.0, 0.1))
        if not policy.wants_draft_timing():
            assert not policy.plan().speculate
    assert policy.wants_draft_timing()
    policy.observe_draft_timing(draft_s)
    assert not policy.wants_draft_timing()  # once
    plan = policy.plan()
    assert plan.speculate != slow
    if slow:
        assert plan.probe and policy.mode == "ar" and policy.next_is_ar()


@pytest.mark.parametrize("with_draft", [False, True])
def test_branches_off_a_pass_launched_ahead_keep_greedy_ids(loaded_pair, with_draft,
                                                            monkeypatch):
    """Policy at ar, draft-free branches on: the next pass is launched before the branches are
    known, and only the branch starting with its token is verified after it. The ids equal the
    plain loop's; both outcomes (no branch left, a branch verified) occur."""
    from engine.decoding import prompt_lookup

    monkeypatch.setattr(prompt_lookup, "AHEAD_MAX_BRANCH_HITS", 1.1)  # always launch ahead
    outcomes = []
    pruned = prompt_lookup.LookupDrafter.pruned

    def counting(self, proposal, first):
        out = pruned(self, proposal, first)
        outcomes.append((len(proposal.tree), len(out.tree)))
        return out

    monkeypatch.setattr(prompt_lookup.LookupDrafter, "pruned", counting)
    # a draft far too slow to win: the policy sits at ar, bound by timing
    monkeypatch.setattr(DraftModel, "forward_seconds", lambda self, token, fresh=False: 10.0)
    plain = loaded_pair["target"]
    target = LoadedModel(**{**vars(plain), "tokenizer": NoEos(plain.tokenizer)})
    draft = loaded_pair["unrelated"] if with_draft else None
    prompt = PROMPT * 3  # repeats: prompt lookup has candidates
    # matches of two tokens or more: branches on some steps, root-only steps between them
    lookup = LookupConfig(sources=("prompt",), ngram_min=2, resume_steps=0, below_draft=0)
    fin = finished(list(generate(target, draft, prompt,
                                 GenerationConfig(mode="tree", max_tokens=60, lookup=lookup))))
    assert list(fin.token_ids) == reference(target.model, prompt, 60)
    assert any(full > 1 and kept == 1 for full, kept in outcomes)  # every branch rejected
    assert any(kept > 1 for _, kept in outcomes)  # a branch verified after the root's pass


@pytest.mark.parametrize("sampling", [GREEDY, SamplingConfig(temperature=0.8, seed=99)])
@pytest.mark.parametrize("with_draft", [False, True])
def test_fast_path_with_branches_emits_what_the_synchronous_path_does(loaded_pair, sampling,
                                                                      with_draft, monkeypatch):
    """Draft-free branches on (the n-gram pool wants the target's argmax, sampled steps too):
    the same ids with passes launched ahead / sampled on device as with every step verified
    synchronously on the host."""
    plain = loaded_pair["target"]
    target = LoadedModel(**{**vars(plain), "tokenizer": NoEos(plain.tokenizer)})
    draft = loaded_pair["unrelated"] if with_draft else None
    cfg = GenerationConfig(mode="tree", max_tokens=50, sampling=sampling)
    fast = finished(list(generate(target, draft, PROMPT * 2, cfg)))
    monkeypatch.setattr(ar_steps.ArAhead, "usable", staticmethod(lambda model: False))
    slow = finished(list(generate(target, draft, PROMPT * 2, cfg)))
    assert fast.token_ids == slow.token_ids and len(fast.token_ids) == 50


@pytest.mark.parametrize("fresh_s, probes", [(4.0, False), (0.005, True)])  # slowed too; not
def test_a_lifted_timing_bound_times_the_draft_again_before_a_probe(fresh_s, probes):
    """At ar, bound by timing, the target's passes slow down (load) so the stale d looks cheap:
    the policy asks for a fresh draft timing first and probes only if that one can win."""
    policy = StepPolicy(TreeConfig(), time_draft=True)
    root = Proposal(TokenTree.with_root(0), [None], chain=True)

    def ar_step(seconds):
        policy.observe(StepResult(root, (0,), 7, seconds, 0.0, seconds))

    for _ in range(3):
        ar_step(0.1)
    policy.observe_draft_timing(0.2)
    assert policy.plan().speculate is False and policy.timing_bound
    for _ in range(200):  # slower passes until the recheck finds the bound lifted
        if policy.wants_draft_timing():
            break
        ar_step(2.0)
        assert not policy.plan().speculate
    assert policy.wants_draft_timing() and policy.retime
    policy.observe_draft_timing(fresh_s)
    assert policy.timing_bound != probes and policy.plan().speculate == probes


def test_the_in_process_mlx_lm_row_runs_on_canopys_own_arrays(loaded_pair):
    """The speed bench's extra row: mlx-lm's model built lazily from the folder, its parameters
    replaced by the very arrays Canopy holds; it decodes the same greedy tokens as Canopy's
    `ar`, and a target whose weights differ in form is refused with the reason."""
    import mlx_lm
    from mlx.utils import tree_flatten

    from engine.bench.peer_in_process import run_in_process, share_weights

    target = loaded_pair["target"]
    model, tokenizer = share_weights(target)
    ours = dict(tree_flatten(target.model.parameters()))
    assert all(a is ours[k] for k, a in tree_flatten(model.parameters()))  # no copy
    fin = finished(list(generate(target, None, PROMPT, GenerationConfig(mode="ar",
                                                                        max_tokens=10))))
    theirs = [int(r.token) for r in mlx_lm.stream_generate(model, tokenizer, PROMPT,
                                                            max_tokens=10)]
    assert theirs[: len(fin.token_ids)] == list(fin.token_ids)
    row = run_in_process(model, tokenizer, PROMPT, 6)
    assert row["prompt_tokens"] == len(PROMPT) and 1 <= row["generated_tokens"] <= 6
    assert row["ttft_seconds"] > 0 and row["decode_tokens_per_second"] > 0

    class Half:  # Canopy holding its weights in another dtype than the folder's
        path = target.path
        model = target.model.__class__(target.model.args)
        model.set_dtype(mx.float16)

    reason = share_weights(Half())
    assert isinstance(reason, str) and "float16" in reason
