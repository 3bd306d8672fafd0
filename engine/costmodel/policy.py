"""The one object that makes every per-step decision of the tree drafter: node budget and tree
shape, threshold, fallback to `ar`, and whether to draft during the target's IO waits.

Measured online from verification results (forgotten exponentially per target step):
- timing (engine.costmodel.step_timing): a draft forward over m tokens d(m), a target pass over
  N tokens v(N) (v(1) from root-only passes on their own; IO included when streamed; draft work
  at its waits beyond the reads left out, rules.pass_cost_seconds), the rest of a step o;
- acceptance of recent trees (tree_record.RecentTrees): best-first trees grow in rounds (the
  start forward, then one forward per batch of w nodes), and the accepted path can only go one
  level deeper per round.
  E_s(N) = 1 + accepted nodes of tree s among its first N nodes; beyond the depth a tree had,
  the path continues one more level with probability rho (how often a path that reached a
  depth reached the next one, over recent trees);
- whether the pass is IO-bound: the share of verify time spent waiting for layers, or with
  the IO thread reading if more (rules.is_io_bound);
- the calibration A(pi): the fraction of nodes with draft path probability ~pi that the target
  accepted (log10 bins), shrunk toward kappa * pi (kappa: accepted / sum of path probabilities).

Each step, with the cost model's formulas (engine.costmodel.formulas (1)-(3)):
- the node budget: N* = argmax_N sum_s E_s(N) / sum_s T(N), T(N) = d(s) + R(N) d(f w) + v(n) + o
  with f the share of each round's width w that joined recent trees (the threshold keeps a
  confident draft's trees narrow and deep) and n = min(N, 1 + f w (R(N) + 1)) nodes verified;
  E_s(N) counts no accepted node deeper than R(N) + 1,
  over rules.node_budgets up to `max_nodes`, or `auto_max_nodes` while the pass is IO-bound;
  the shape (w, R) of N comes from rules.tree_shape (wide batches under the forward cap);
- the threshold: a node whose path probability pi gives A(pi) per second of its verify cost
  (v1) below the rate to beat is not worth a slot (costmodel.marginal_threshold);
- the mode: when speculation's best predicted rate loses to ar's 1 / (v(1) + o) (after two
  trees, or at once when even a draft whose every token were accepted could not win: a draft as
  slow as the target's pass, costmodel.speculation_can_win), the drafter falls back to `ar`:
  root-only trees, no draft work. Before its first tree, one timed 1-token draft forward
  decides whether even perfect acceptance could win (else no catch-up, no tree); with the
  pair's measures stored by an earlier process (engine.costmodel.timing_store: d(1), v(1), o)
  it decides before the first step and times nothing (`stored`). It probes
  with a small tree every `interval` steps (doubling while probes lose, up to PROBE_MAX) and
  returns when a probe predicts a win; when bound by timing it does not probe, but rechecks
  the bound as ar's pass time is measured.
- draft work at an IO wait: one more forward of the next step's tree while it fits
  (rules.wait_work_fits with d of its size: the rule the cost model's pass simulation runs).
- the draft's catch-up on pending tokens (the deferred prompt, tokens decoded at ar): a tree
  waits (root-only steps) while the trees' measured acceptance (before any tree: half of what
  perfect acceptance would save) could not repay it over the tokens left; it runs in timed
  chunks, and in IO waits with no tree to extend (engine.costmodel.catch_up).
- draft-free branches (prompt lookup, n-gram pool): verify slots on top of the draft's tree.
  The draft's part is planned exactly as it would be without them (budget, threshold, ar
  fallback: their slots and tokens are left out of E(N), T(N) and ar's rate), so a merged step
  never accepts fewer tokens than the draft's tree alone; their nodes must clear `node_worth`,
  the acceptance that pays for a slot (v's slope) at the running mode's rate, and together the
  seconds they add to the pass (`extra_slot_seconds`: on a root-only step the jump from a
  one-token pass to a tree pass, rules.branches_pay).
The first step drafts one forward's worth (root + top-k children; `max_nodes` when the passes
timed so far were IO-bound) and the second is a plain ar step, to measure d, v(N) and v(1)
before deciding; N grows at most to 4 N_seen + w per
step (exploration is bounded by what was observed).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from ..config import VERIFY_COST_PRIOR
from . import formulas as cm
from . import rules
from .catch_up import CatchUp, CatchUpDecisions
from .step_timing import StepTiming, draft_curve
from .timing_store import PairTiming
from .tree_record import DECAY, RecentTrees, TreeRecord

PROBE_FIRST, PROBE_MAX = 16, 256  # steps in ar before a probe; doubles while probes lose
RETURN_MARGIN = 1.05  # a probe must predict a win by this much to return to speculation
CAN_WIN_MARGIN = 1.10  # perfect acceptance must beat ar by this much to be worth probing
START_TOKENS = 1.5  # s of costmodel (3)
AR_PASSES_BEFORE_TIMING = 3  # root-only passes timed before the draft's timing forward (noise)


@dataclass(frozen=True)
class Plan:
    """What the drafter does this step."""

    speculate: bool  # False: root only (ar)
    max_nodes: int
    threshold: float
    probe: bool = False
    rounds: int | None = None  # expansion forwards after the first (None: up to the caps)
    width: int | None = None  # nodes per expansion forward (None: the configured expand width)
    children: int | None = None  # top-k candidates per expanded node (None: the configured)


class StepPolicy(CatchUpDecisions):
    """Chooses node budget, tree shape, threshold, ar fallback and IO-wait drafting (module doc).

    Args:
        tree: the tree configuration (caps, initial threshold, expand width, forward cap).
        adapt_threshold: learn the threshold (else keep `tree.threshold`).
        auto: choose the node budget and fall back to ar (else always `tree.max_nodes`).
        time_draft: the drafter times one 1-token draft forward before the first tree
            (wants_draft_timing); the first steps are root-only until then.
        stored: the pair's measures from an earlier process: d and v start from them, the draft
            is not timed before its first tree, and a draft that can never win starts at ar.
        max_tokens: the answer's token limit (prices the draft's catch-up, catch_up.py; None:
            no limit known, a catch-up always pays).
    """

    def __init__(self, tree, adapt_threshold: bool = True, auto: bool = True,
                 time_draft: bool = False, stored: PairTiming | None = None,
                 max_tokens: int | None = None):
        self.tree, self.adapt, self.auto = tree, adapt_threshold, auto
        self.max_tokens, self.generated = max_tokens, 0
        self.catch = CatchUp()  # the draft's catch-up on pending tokens (engine.costmodel.catch_up)
        self.time_draft = time_draft and auto
        self.ar_passes = 0  # root-only passes observed
        prior = getattr(tree, "verify_cost_prior", None)  # engine.config: platform default
        self.timing = StepTiming(VERIFY_COST_PRIOR if prior is None else prior)
        self.w = max(1, tree.expand_width)
        self.forwards_cap = max(1, tree.max_forwards)
        self.threshold = tree.threshold
        self.lo, self.hi = 1e-4, 0.5
        self.recent = RecentTrees()  # acceptance of recent trees (engine.costmodel.tree_record)
        self.steps = 0
        self.batches: deque = deque(maxlen=16)  # (nodes joined after the root, room, step)
        self.mode = "tree"
        self.nodes = 1 + self.w  # N of the next speculative step
        self.last_plan: Plan | None = None
        self.ar_sampled = False  # a root-only step has been timed
        self.evidence = 0  # trees observed since speculation (re)started
        self.since = 0  # ar steps since the last probe / fallback
        self.interval = PROBE_FIRST
        self.timing_bound = False
        self.timed_now = False  # a draft forward was timed before this step's plan
        self.retime = False  # at ar, bound by timing: time the draft again before a probe
        self.switches: list[tuple[int, str]] = []  # (step, mode entered)
        self.node_worth: float | None = None  # acceptance a draft-free node needs for its slot
        self.running_rate: float | None = None  # tokens/s of the running mode (predicted)
        if stored is not None:
            self._start_from(stored)

    def _start_from(self, stored: PairTiming) -> None:
        """Seed d and v with the stored measures (one point each, forgotten like any other);
        a draft that even perfect acceptance cannot make pay goes to ar before any step."""
        self.timing.seed(stored)
        self._refit()
        if self.auto and not self.can_win():
            self._enter("ar")

    def measured_timing(self) -> PairTiming | None:
        """What the policy knows now, for the next process (None until a draft forward and a
        target pass were timed): d(1), v(1) with its IO share, o."""
        return self.timing.measured(self._weight)

    # ---- estimates (timing: engine.costmodel.step_timing) -----------------------------------
    @property
    def d(self) -> cm.Curve | None:
        return self.timing.d

    @property
    def v(self) -> cm.Curve | None:
        return self.timing.v

    @property
    def v_slope(self) -> float:
        return self.timing.v_slope

    @property
    def o(self) -> float:
        return self.timing.o

    @property
    def trees(self) -> deque[TreeRecord]:
        return self.recent.trees

    def calibration(self) -> np.ndarray:
        return self.recent.calibration()

    def _weight(self, step: int) -> float:
        return DECAY ** (self.steps - step)

    def _refit(self) -> None:
        self.timing.refit(self._weight)

    def batch_fill(self) -> float:
        """Share of a round's width that joined recent trees: the threshold, not the budget,
        often ends a round early (a confident draft's tree is a deep chain, ~1 node a round)."""
        room = sum(self._weight(k) * r for _, r, k in self.batches)
        if room <= 0:
            return 1.0
        return min(1.0, sum(self._weight(k) * n for n, _, k in self.batches) / room)

    def shape(self, nodes: int) -> rules.TreeShape:
        return rules.tree_shape(nodes, self.w, self.forwards_cap, self.tree.top_k)

    def _speculate(self, nodes: int, probe: bool = False) -> Plan:
        s = self.shape(nodes)
        return Plan(True, s.nodes, self.threshold, probe, s.rounds, s.width, s.children)

    def io_bound(self) -> bool:
        """Recent verify passes spent most of their time waiting for layers (streamed)."""
        return rules.is_io_bound(*self.timing.io_and_total(self._weight))

    def extra_slot_seconds(self, base: int, extra: int) -> float | None:
        """Seconds `extra` draft-free nodes add to a pass of `base` nodes (None before a pass was
        timed; 0 while passes are IO-bound: v's slope there is noise and reads hide compute;
        rules.extra_nodes_seconds)."""
        if self.v is None:
            return None
        return rules.extra_slot_seconds(self.v, self.io_bound(), base, extra,
                                        (n for n, *_ in self.timing.passes),
                                        bool(self.timing.singles))

    def node_limit(self) -> int:
        return rules.node_limit(self.io_bound(), self.tree.max_nodes, self.tree.auto_max_nodes)

    def ar_rate(self) -> float | None:
        """Root-only steps: one token per one-token pass (draft-free branches left out)."""
        if self.v is None:
            return None
        return 1.0 / (self.v(1) + self.o)

    def tree_seconds(self, nodes: int) -> float:
        """T(N) of the tree a budget of N grows: its R(N) + 1 rounds join as many nodes per
        round as recent trees did (at most the shape's width), so it verifies that many; the
        draft-free slots ride on top (module doc)."""
        s = self.shape(nodes)
        batch = max(1.0, self.batch_fill() * s.width)
        grown = min(nodes, 1 + batch * (s.rounds + 1))
        draft = 0.0 if nodes <= 1 else self.d(START_TOKENS) + s.rounds * self.d(batch)
        return draft + self.v(grown) + self.o

    def rho(self) -> float:
        return self.recent.rho(self._weight)

    def tree_tokens(self, nodes: int, rho: float | None = None) -> float | None:
        """E(N) over recent trees (None before any tree); paths deepen at most a level a round."""
        cap = min(self.shape(nodes).rounds + 1, self.tree.max_depth)
        return self.recent.tokens(nodes, cap, self.rho() if rho is None else rho, self._weight)

    def tree_rate(self, nodes: int, rho: float | None = None) -> float | None:
        """Predicted tokens/s with a budget of `nodes`: E(N) / T(N)."""
        if self.d is None or self.v is None:
            return None
        e = self.tree_tokens(nodes, rho)
        return None if e is None else e / self.tree_seconds(nodes)

    def best_nodes(self) -> tuple[int, float] | None:
        rho = self.rho()
        seen = max((t.nodes for t in self.trees), default=1)
        top = min(self.node_limit(), 4 * seen + self.w)  # bounded exploration
        budgets = rules.node_budgets(top, self.w, self.forwards_cap)
        rates = [(self.tree_rate(n, rho), n) for n in budgets]
        if not rates or rates[0][0] is None:
            return None
        rate, n = max(rates)
        return n, rate

    def can_win(self, d: cm.Curve | None = None) -> bool:
        """Could any tree beat ar if every drafted token were accepted? (`d`: instead of the
        fitted draft forward.)"""
        d = d or self.d
        if d is None or self.v is None:
            return True
        return cm.speculation_can_win(self._tree_draft_seconds(d), self.v, self.o,
                                      self.tree.max_nodes, self.w, CAN_WIN_MARGIN)

    def _tree_draft_seconds(self, d: cm.Curve):
        """Drafting seconds of a tree of n nodes with draft forward `d` (formulas (3))."""
        shape = self.shape
        return lambda n: cm.tree_draft_seconds(d, n, shape(n).width, 1.0)

    # ---- the per-step decisions ------------------------------------------------------------
    def plan(self, pending: int = 0) -> Plan:
        """This step's plan; `pending`: committed tokens the draft must catch up on first (a
        speculative plan becomes root-only when that cannot pay, catch_up.py)."""
        plan = self._plan()
        if plan.speculate and self.auto and not self.catch_up_pays(pending):
            plan = Plan(False, 1, self.threshold)
        self.last_plan = plan
        self.timed_now = False
        return plan

    def drop_plan(self) -> None:
        """The drafter stopped catching up (it stopped paying): this step is root-only."""
        self.last_plan = Plan(False, 1, self.threshold)

    def first_io_tree(self) -> int:
        """The first tree while passes are IO-bound: the biggest budget whose drafting takes
        at most one one-token pass (a slow draft's tree could otherwise cost many passes)."""
        d, v = self.d, self.v
        budgets = rules.node_budgets(self.tree.max_nodes, self.w, self.forwards_cap)
        if not budgets:  # max_nodes 1
            return 1
        if d is None or v is None:
            return budgets[-1]
        fit = [n for n in budgets
               if cm.tree_draft_seconds(d, n, self.shape(n).width, START_TOKENS) <= v(1)]
        return max(fit, default=budgets[0])

    def _plan(self) -> Plan:
        if not self.auto:
            return self._speculate(self.tree.max_nodes)
        if self.mode == "tree":
            if self.trees and not self.ar_sampled:  # time one ar step: v(1), o without a draft
                return Plan(False, 1, self.threshold)
            if self.time_draft and not self.timing.forwards:  # ar until the draft is timed
                return Plan(False, 1, self.threshold)
            return self._speculate(self.nodes)
        self.since += 1
        if not self.timing_bound and self.since >= self.interval:
            self.since = 0
            return self._speculate(1 + 2 * self.w, probe=True)
        return Plan(False, 1, self.threshold, probe=self.timed_now)  # probe: draft timed

    def wants_draft_timing(self, waiting: bool = False) -> bool:
        """Time one 1-token draft forward before the first tree? (time_draft, a few of ar's
        passes timed, or `waiting` for a streamed layer, where it costs nothing; no draft
        forward timed yet.) A draft too slow to ever win is then never caught up on the prompt
        nor grown into trees (observe_draft_timing)."""
        if self.retime:
            return True
        return (self.time_draft and self.mode == "tree" and not self.timing.forwards
                and (waiting or self.ar_passes >= AR_PASSES_BEFORE_TIMING))

    def could_win_with_draft(self, seconds: float) -> bool:
        """can_win with a draft whose 1-token forward takes `seconds` (a lower bound of d(1)
        the drafter asks about before it times a whole forward)."""
        return self.can_win(draft_curve([(1, seconds, 1.0)]))

    def observe_draft_timing(self, seconds: float) -> None:
        """One timed 1-token draft forward: d's first point; falls back to ar (bound by timing)
        at once when even a draft whose every token were accepted could not beat ar."""
        self.timing.forwards.append((1, seconds, self.steps))
        self.timed_now = True
        self._refit()
        if self.retime:  # at ar, bound by timing: lifted only if the fresh d says so
            self.retime = False
            self.timing_bound = not self.can_win()
        elif not self.can_win():
            self._enter("ar")

    def next_is_ar(self) -> bool:
        """Will the next plan() be root-only whatever observe() learns from this step? True only
        while at ar after a root-only plan, with no probe or timing recheck due (see _plan and
        observe)."""
        plan = self.last_plan
        if not self.auto or self.mode != "ar" or plan is None or plan.speculate:
            return False
        if self.timing_bound:
            return self.since % PROBE_FIRST != 0  # observe rechecks the bound at multiples
        return self.since + 1 < self.interval

    def wait_forwards(self) -> int:
        """Draft forwards the pipeline may run for the next tree (rules.wait_forward_sizes)."""
        plan = self.last_plan
        if plan is None or not plan.speculate:
            return 0
        rounds = plan.rounds if plan.rounds is not None else self.shape(plan.max_nodes).rounds
        return len(rules.wait_forward_sizes(False, plan.width or self.w, rounds))

    def draft_while_waiting(self, facts: rules.WaitFacts, calls: int, tokens: int) -> bool:
        """Run one more draft forward over `tokens` tokens while the target waits for a layer?
        `calls`: forwards already run during waits of this pass. The cost model's pass
        simulation applies the same rule (formulas.pass_seconds)."""
        work = None if self.d is None else self.d(tokens)
        return rules.wait_work_fits(facts, work, calls, self.wait_forwards())

    def observe_forwards(self, forwards) -> None:
        """Draft forwards timed outside a proposal (during IO waits): (tokens, seconds)."""
        for m, s in forwards:
            self.timing.forwards.append((m, s, self.steps))

    def observe(self, result) -> None:
        """Learn from one verified step (engine.decoding.drafters.StepResult)."""
        self.steps += 1
        self.generated += len(result.accepted)  # the accepted path and the bonus
        tree = result.proposal.tree
        n = len(tree)
        draft_s = getattr(result, "draft_seconds", 0.0)
        verify_s = getattr(result, "verify_seconds", 0.0) or result.step_seconds
        io_wait = getattr(result, "io_wait_seconds", 0.0)
        pass_s = rules.pass_cost_seconds(verify_s, getattr(result, "wait_work_seconds", 0.0),
                                         getattr(result, "io_busy_seconds", None))
        # IO-bound: waiting for layers, or the IO thread reading, fills most of the pass (the
        # compute thread's time outside waits also holds GIL and allocator stalls)
        io = max(io_wait, getattr(result, "io_busy_seconds", None) or 0.0)
        self.timing.add_pass(n, pass_s, self.steps, io)
        self.timing.overheads.append(max(0.0, result.step_seconds - draft_s - verify_s))
        for m, s in getattr(result.proposal, "forwards", ()):
            self.timing.forwards.append((m, s, self.steps))
        # draft-free nodes (appended after the draft's) cost verification only: they count in
        # the pass size above (v's fit), not as the draft's tree
        drafted = n - getattr(result.proposal, "free_nodes", 0)
        self.ar_sampled |= drafted == 1
        self.ar_passes += drafted == 1
        if drafted > 1:
            grew, plan = len(getattr(result.proposal, "forwards", ())), self.last_plan
            if grew and plan is not None and plan.speculate:  # rounds of `width` nodes
                self.batches.append((drafted - 1, grew * (plan.width or self.w), self.steps))
            self._observe_tree(tree, result.accepted, drafted)
            self.evidence += 1
        self._refit()
        if self.auto and not self.trees and self.io_bound():
            # an IO-bound pass costs about the same for a full tree: a first tree of one
            # forward would spend a whole pass on a token or two
            self.nodes = max(self.nodes, self.first_io_tree())
        if (self.auto and self.mode == "ar" and drafted == 1 and self.timing_bound
                and self.since % PROBE_FIRST == 0 and self.can_win()):
            # ar's pass time is measured (trees or not): the bound looks lifted; a drafter that
            # times its draft times it again first (d may be stale: load changes), so a probe
            # does not catch the draft up on a stale promise
            if self.time_draft:
                self.retime = True
            else:
                self.timing_bound = False
        best, ar = self.best_nodes(), self.ar_rate()
        if ar is None:
            return
        # a draft-free node pays for its slot at the running mode's rate (ar's before any tree:
        # a draft too slow to ever win grows none)
        spec = ar if best is None else best[1]
        rate = ar if self.auto and self.mode == "ar" else max(spec, ar)
        self.node_worth = min(self.hi, rate * self.v_slope)
        self.running_rate = rate
        if best is None:
            return
        nodes = best[0]
        self._update_threshold(max(spec, ar))
        if not self.auto:
            return
        if self.mode == "tree":
            self.nodes = nodes
            if spec < ar and (self.evidence >= 2 or not self.can_win()):
                self._enter("ar")
        elif drafted > 1:  # a probe
            if spec >= ar * RETURN_MARGIN:
                self.nodes = nodes
                self._enter("tree")
            else:
                self.interval = min(PROBE_MAX, self.interval * 2)

    def _observe_tree(self, tree, accepted, n: int) -> None:
        self.recent.observe(self.steps, tree, accepted, n)

    def _enter(self, mode: str) -> None:
        self.mode, self.since = mode, 0
        self.switches.append((self.steps, mode))
        if mode == "ar":
            self.timing_bound = not self.can_win()
        else:
            self.interval, self.evidence = PROBE_FIRST, 0

    def _update_threshold(self, rate: float) -> None:
        """A node takes a verify slot (v1 seconds): worth it while A(pi) / v1 >= rate."""
        if not self.adapt or self.v is None or rate <= 0:
            return
        per_node = max(self.v_slope, 1e-6)
        edge = cm.marginal_threshold(self.calibration(), self.recent.edges, per_node, rate)
        # IO-bound: a verified node costs next to nothing (v(N)'s slope there is noise and
        # compute hidden under reads): prune no harder than configured; N* bounds the tree
        hi = min(self.hi, self.tree.threshold) if self.io_bound() else self.hi
        self.threshold = float(min(max(edge, self.lo), hi))
