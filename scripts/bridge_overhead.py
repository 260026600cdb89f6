"""What the vocabulary bridge costs when nothing needs it: a preset loaded twice, as it is (`vocab="shared"`)
and with every member but the primary forced through the mapping (`vocab="bridge"`), run on the same
prompts, interleaved per prompt (shared, bridge, bridge, shared, ... so drift cancels), for each strategy.

The bridge must not change a token (exactness: its r equals the shared r within float noise, so at T = 0
the outputs are the same up to the near-ties docs/design.md §4 excuses) and should cost at most a few
per cent. Reports, per strategy: prompts with identical tokens, the excused divergences with their
margins, total generation seconds both ways and their ratio. JSON + Markdown.

    .venv/bin/python scripts/bridge_overhead.py -p qwen2.5-coder-duo --prompts 20 --out docs/bench/bridge-duo
"""

from __future__ import annotations

import argparse
import gc
import json
import time
from pathlib import Path

from edge_specens import Ensemble
from edge_specens.bench.runner import prefill, prompt_tokens, workload_prompts
from edge_specens.exactness import agree

STRATEGIES = {"standard": {"strategy": "standard"}, "se:3,1": {"strategy": "se", "gamma": [3, 1]}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-p", "--preset", default="qwen2.5-coder-duo")
    ap.add_argument("--workload", default="humaneval", choices=["humaneval", "chat"])
    ap.add_argument("--prompts", type=int, default=20)
    ap.add_argument("-n", "--max-tokens", type=int, default=128)
    ap.add_argument("--out", type=Path, default=Path("bridge-overhead"))
    args = ap.parse_args()
    t_start = time.perf_counter()
    t0 = time.perf_counter()
    shared = Ensemble.from_preset(args.preset, vocab="shared", cache_ram=0, progress=False)
    load_shared = time.perf_counter() - t0
    t0 = time.perf_counter()
    bridged = Ensemble.from_preset(args.preset, vocab="bridge", cache_ram=0, progress=False)
    load_bridge = time.perf_counter() - t0
    reports = [r.line() for r in bridged.vocab_reports]
    texts, ids = workload_prompts(args.workload, args.prompts)
    prompts = prompt_tokens(shared, texts, chat=True)
    assert prompts == prompt_tokens(bridged, texts, chat=True), "the primary's tokens differ"
    ensembles = {"shared": shared, "bridge": bridged}
    for ens in ensembles.values():  # page the weights in, build what is lazy
        for opts in STRATEGIES.values():
            prefill(ens, prompts[0])
            ens.generate(prompts[0], max_tokens=8, temperature=0, **opts)
    runs = []
    for i, prompt in enumerate(prompts):
        order = ["shared", "bridge"] if i % 2 == 0 else ["bridge", "shared"]
        for name, opts in STRATEGIES.items():
            out = {}
            for mode in order:
                ens = ensembles[mode]
                prefill(ens, prompt)
                gc.collect()
                res = ens.generate(prompt, max_tokens=args.max_tokens, temperature=0, **opts)
                out[mode] = res
                runs.append(
                    {
                        "prompt": ids[i],
                        "strategy": name,
                        "vocab": mode,
                        "seconds": res.stats.seconds,
                        "decode_seconds": res.stats.decode_seconds,
                        "new_tokens": res.stats.new_tokens,
                        "tokens": res.tokens,
                    }
                )
            same = out["shared"].tokens == out["bridge"].tokens
            margin = None
            if not same:
                ok, margin = agree(shared, list(prompt), list(out["shared"].tokens), list(out["bridge"].tokens))
                assert ok, f"{ids[i]} {name}: bridge and shared part at a margin of {margin} (not a near-tie)"
            runs[-1]["identical"] = runs[-2]["identical"] = same
            runs[-1]["margin"] = runs[-2]["margin"] = margin
            s, b = out["shared"].stats.seconds, out["bridge"].stats.seconds
            print(f"{ids[i]:14s} {name:8s} shared {s:6.2f} s  bridge {b:6.2f} s  identical {same}", flush=True)
    shared.close()
    bridged.close()
    rows = []
    for name in STRATEGIES:
        mine = [r for r in runs if r["strategy"] == name]
        sec = {m: sum(r["seconds"] for r in mine if r["vocab"] == m) for m in ensembles}
        tok = {m: sum(r["new_tokens"] for r in mine if r["vocab"] == m) for m in ensembles}
        pairs = [r for r in mine if r["vocab"] == "shared"]
        rows.append(
            {
                "strategy": name,
                "identical": sum(r["identical"] for r in pairs),
                "prompts": len(pairs),
                "excused_margins": [r["margin"] for r in pairs if not r["identical"]],
                "shared_tok_s": tok["shared"] / sec["shared"],
                "bridge_tok_s": tok["bridge"] / sec["bridge"],
                "time_ratio": sec["bridge"] / sec["shared"],
            }
        )
    args.out.mkdir(parents=True, exist_ok=True)
    report = {
        "preset": args.preset,
        "workload": args.workload,
        "max_tokens": args.max_tokens,
        "load_seconds": {"shared": load_shared, "bridge": load_bridge},
        "vocab_reports": reports,
        "seconds": time.perf_counter() - t_start,
        "rows": rows,
        "runs": runs,
    }
    (args.out / "bridge.json").write_text(json.dumps(report, indent=1))
    lines = [
        f"# {args.preset} as it is vs every follower forced through the vocabulary bridge",
        "",
        f"{args.prompts} {args.workload} prompts, {args.max_tokens} tokens at T = 0, interleaved per prompt; "
        f"load {load_shared:.1f} s shared, {load_bridge:.1f} s bridged. At load: {'; '.join(reports)}",
        "",
        "| strategy | identical | excused near-ties (margin) | shared tok/s | bridge tok/s | time bridge / shared |",
        "|---|---:|---|---:|---:|---:|",
    ]
    for r in rows:
        margins = ", ".join(f"{m:.3g}" for m in r["excused_margins"]) or "none"
        lines.append(
            f"| {r['strategy']} | {r['identical']}/{r['prompts']} | {margins} | {r['shared_tok_s']:.2f} | "
            f"{r['bridge_tok_s']:.2f} | {r['time_ratio']:.3f} |"
        )
    (args.out / "bridge.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
