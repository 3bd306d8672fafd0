"""Short benchmark of the draft-free sources on the demo pair (not a test; run by hand):

    python tests/engine/bench_draft_free.py [--max-tokens 96] [--budget-frac 0.5]

Per prompt (a code edit and a summary, both with the text in the prompt): greedy tokens per
target pass and tokens/s, each configuration run back to back in one process, for ar, lookahead,
prompt lookup alone, the draft tree and the merged tree ("fixed": the cost model's auto
fallback off). Prints a Markdown table; every configuration is checked to emit ar's tokens.
"""

from __future__ import annotations

import argparse

from engine.config import GenerationConfig, LookupConfig, TreeConfig
from engine.events import Finished
from engine.formats import demo
from engine.session import Session

CODE_EDIT = """Rewrite this Python function so that it uses a list comprehension. Keep the name \
and the docstring.

def even_squares(numbers):
    \"\"\"Return the squares of the even numbers, in order.\"\"\"
    result = []
    for n in numbers:
        if n % 2 == 0:
            result.append(n * n)
    return result
"""
SUMMARY = """Summarize the following text in three sentences.

The city council met on Tuesday to discuss the new public library. The library will be built \
on the site of the old train station, next to the river. It will have three floors: the first \
for children's books, the second for adult fiction and non-fiction, and the third for study \
rooms and computers. The council expects construction to start in the spring and to finish \
within two years. The project will cost twelve million dollars, paid for by the city and by a \
grant from the state. Several residents spoke at the meeting; most supported the library, but \
some asked for more parking spaces near the river.
"""
PROMPTS = {"code edit": CODE_EDIT, "summary": SUMMARY}


def configs():
    none, prompt = LookupConfig(sources=()), LookupConfig(sources=("prompt",))
    return {  # name: (uses the draft, config)
        "ar": (False, dict(mode="ar")),
        "lookahead": (False, dict(mode="lookahead")),
        "prompt lookup": (False, dict(mode="tree", lookup=prompt)),
        "draft tree": (True, dict(mode="tree", lookup=none)),
        "draft tree (fixed)": (True, dict(mode="tree", lookup=none, tree=TreeConfig(auto=False))),
        "merged tree": (True, dict(mode="tree")),
        "merged tree (fixed)": (True, dict(mode="tree", tree=TreeConfig(auto=False))),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--max-tokens", type=int, default=96)
    ap.add_argument("--budget-frac", type=float, default=None)
    ap.add_argument("--only", default="", help="comma-separated configuration names")
    args = ap.parse_args()
    target, draft = demo.build_demo_pair(demo.models_home())
    budget = None
    if args.budget_frac:
        from engine.streaming import weights as W

        index = W.index_model(target)
        layers = [index.layer_bytes(i) for i in range(len(index.layers))]
        budget = sum(t.length for t in index.other) + int(args.budget_frac * sum(layers))
    pair = Session.load(target, draft, budget_bytes=budget)
    alone = Session.load(target, None, budget_bytes=budget)
    print("| prompt | mode | tokens/pass | tok/s | × ar tok/s | passes | accepted by source |")
    print("|---|---|---|---|---|---|---|")
    for pname, text in PROMPTS.items():
        ids = pair.encode_chat([{"role": "user", "content": text}])
        ar_ids = ar_speed = None
        for name, (with_draft, kw) in configs().items():
            if args.only and name != "ar" and name not in args.only.split(","):
                continue
            session = pair if with_draft else alone
            out = list(session.generate(ids, GenerationConfig(max_tokens=args.max_tokens, **kw)))
            fin = out[-1]
            assert isinstance(fin, Finished), fin
            st = fin.stats
            if name == "ar":
                ar_ids, ar_speed = fin.token_ids, st.tokens_per_second
            assert fin.token_ids == ar_ids, name  # lossless
            acc = st.extra.get("accepted_by_source", {})
            prop = st.extra.get("proposed_by_source", {})
            by = ", ".join(f"{s} {acc.get(s, 0)}/{n}" for s, n in prop.items())
            print(f"| {pname} | {name} | {st.tokens_per_pass:.2f} | {st.tokens_per_second:.2f} | "
                  f"{st.tokens_per_second / ar_speed:.2f} | {st.target_passes} | {by} |",
                  flush=True)


if __name__ == "__main__":
    main()
