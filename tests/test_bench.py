"""The bench on tiny GGUF members: report fields, files, exactness and speed-up bookkeeping."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from edge_specens import Ensemble, InvalidParameterError
from edge_specens.bench import (
    CHAT_PROMPTS,
    ROW_FIELDS,
    build_settings,
    parse_settings,
    parse_strategies,
    run_bench,
    workload_prompts,
)
from edge_specens.bench.report import markdown
from edge_specens.bench.runner import QUICK, Setting, label
from edge_specens.cli.bench import bench
from edge_specens.exactness import first_divergence, margins_by_batching, margins_by_chunking, near_tie_margin
from edge_specens.params import SamplingParams

PROMPTS = ["hello world", "def f"]
STRATEGIES = "single,standard,sd:3,se:1,1,se:4,1,se:1,1+lookup,auto"
PAR_STRATEGIES = "standard+par,sd:3+par,se:4,1+lookup+par,auto"


@pytest.fixture(scope="module")
def ens(tiny_models):
    # one thread: other jobs on a small machine must not make llama.cpp's thread pool crawl
    e = Ensemble.from_paths([tiny_models["small"], tiny_models["big"]], n_ctx=512, kv_f32=True, n_threads=1)
    yield e
    e.close()


@pytest.fixture(scope="module")
def report(ens, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench_out")
    rep = run_bench(ens, prompts=PROMPTS, max_tokens=16, strategies=STRATEGIES, out=out, progress=False)
    return rep, out


def test_files_written(report):
    rep, out = report
    assert json.loads((out / "bench.json").read_text()) == json.loads(json.dumps(rep))
    assert (out / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (out / "bench.md").read_text()
    assert "| strategy | gamma | tok/s | speed-up | predicted |" in md
    for title in ("WE, T = 0", "WE, T = 0.8", "WE, T = 1", "CD, T = 0", "CD, T = 1"):
        assert title in md
    assert "top-k 40, top-p 0.95, min-p 0.05" in md  # a sampled setting says which filters ran
    assert "speed-up = (total generated tokens / total seconds)" in md
    assert "bench.png" in md


def test_json_shape(report, ens, tiny_models):
    rep, _ = report
    assert {"rows", "machine", "config", "memory"} <= set(rep)
    n_strat = len(parse_strategies(STRATEGIES, 2))
    assert len(rep["rows"]) == 5 * n_strat  # we-t0, we-t0.8, we-t1, cd-t0, cd-t1
    for row in rep["rows"]:
        assert tuple(row) == ROW_FIELDS  # exactly these fields, in this order
        assert len(row["member_calls_per_token"]) == len(row["member_tokens_per_token"]) == 2
        assert row["tokens_per_second"] > 0 and row["speedup_vs_standard"] > 0
        assert 0.0 <= row["overhead_fraction"] <= 1.0
        assert row["peak_rss_mb"] > 0 and row["rss_mb"] > 0
        assert row["predicted_speedup"] is None or isinstance(row["predicted_speedup"], float)
        if row["strategy"] == "auto":  # auto's own predictions, seeded sampled rows included (issue 30)
            assert isinstance(row["predicted_speedup"], float) and row["predicted_speedup"] > 0
    looked = [r for r in rep["rows"] if r["lookup"]]
    assert len(looked) >= 4 and all(r["strategy"] in ("se", "auto") for r in looked)
    m = rep["machine"]
    for k in ("cpu", "cores", "threads", "n_gpu_layers", "llama_cpp_python", "date"):
        assert m[k] is not None
    assert m["threads"] == 1 and m["n_gpu_layers"] == 0
    mem = rep["memory"]
    assert mem["model_files_bytes"] == tiny_models["small"].stat().st_size + tiny_models["big"].stat().st_size
    assert mem["peak_rss_bytes"] > 0 and mem["peak_rss_over_model_files"] > 0
    assert len(rep["runs"]) == 5 * n_strat * len(PROMPTS)
    assert rep["config"]["prompts"] == ["prompt-0", "prompt-1"]
    assert rep["config"]["workload"] == "custom"  # prompts were given, not taken from a workload
    for row in rep["rows"]:
        assert isinstance(row["parallel"], bool) and not (row["parallel"] and row["strategy"] != "auto")
        assert all(isinstance(t, int) and t >= 0 for t in row["member_threads"])  # single: 0 for the idle one
    for run in rep["runs"]:
        assert {"parallel", "member_threads", "member_devices"} <= set(run)


def test_rows_are_consistent(report):
    rep, _ = report
    rows = {(r["setting"], r["strategy"], tuple(r["gamma"] or ())): r for r in rep["rows"]}
    for r in rep["rows"]:
        greedy = r["setting"].endswith("t0")
        if r["strategy"] == "standard":
            assert r["speedup_vs_standard"] == 1.0
            assert r["member_calls_per_token"] == [1.0, 1.0] or not greedy  # T=1: may stop at end-of-generation
            assert r["acceptance_rate"] is None
        if r["strategy"].startswith("single"):
            assert r["identical_to_standard"] is None and r["acceptance_rate"] is None
            assert sorted(r["member_calls_per_token"])[0] == 0.0
        elif greedy:
            assert r["identical_to_standard"] == 1.0, r  # exact strategies, f32 KV cache
        else:
            assert r["identical_to_standard"] is None
        if r["strategy"] in ("sd", "se"):
            assert r["acceptance_rate"] is not None and 0.0 <= r["acceptance_rate"] <= 1.0
            assert r["gamma"] is not None
    # se gammas are written proposer first: the 0.5B-like small model proposes in both orders
    assert ("we-t0", "se", (4, 1)) in rows and ("cd-t0", "se", (1, 4)) in rows
    assert ("we-t0", "single:0", ()) in rows and ("cd-t0", "single:1", ()) in rows


def test_settings_reuse_loaded_members(ens):
    sets = build_settings(ens, parse_settings("all"))
    assert [s.id for s in sets] == ["we-t0", "we-t0.8", "we-t1", "cd-t0", "cd-t1"]
    assert sets[0].ens is ens and sets[0].ens is sets[1].ens is sets[2].ens
    assert sets[1].sampling() == dict(temperature=0.8, top_k=40, top_p=0.95, min_p=0.05)  # llama.cpp's defaults
    assert sets[0].sampling() == dict(temperature=0.0)
    cd = sets[3].ens
    assert cd is sets[4].ens and cd.spec.method == "cd" and cd.spec.mu == 0.1
    assert cd.members[0] is ens.members[1] and cd.members[1] is ens.members[0]  # bigger model = expert


def test_parsing():
    keys = [s.key for s in parse_strategies("sd:3,se:8,1,auto", 2)]
    assert keys == ["standard", "sd:3", "se:8,1", "auto"]  # standard always runs
    assert [s.key for s in parse_strategies("se", 2)] == ["standard", "se:1,1", "se:3,1", "se:5,1", "se:8,1", "se:16,1"]
    assert [s.key for s in parse_strategies(None, 2)][:3] == ["single:0", "single:1", "standard"]
    assert parse_settings("we") == ["we-t0", "we-t0.8", "we-t1"]
    look = parse_strategies("se:1,1+lookup,se:3,1+lookup8", 2)[1:]
    assert [(s.key, s.gamma, s.lookup) for s in look] == [("se:1,1+lookup", (1, 1), 15), ("se:3,1+lookup8", (3, 1), 8)]
    for bad in ("bogus", "se:8", "single:5", "sd:0", "sd:3+lookup", "se:1,1+lookup0", "auto+lookup"):
        with pytest.raises(InvalidParameterError):
            parse_strategies(bad, 2)
    with pytest.raises(InvalidParameterError):
        parse_settings("xx-t0")


def test_parsing_side_by_side():
    specs = parse_strategies("standard+par,sd:4+par,se:4,1+par,se:4,1+lookup+par,se:4,1+par+lookup8,auto+par", 2)
    assert [(s.key, s.parallel) for s in specs] == [
        ("standard", False),  # the sequential reference is added: speed-ups are relative to it
        ("standard+par", True),
        ("sd:4+par", True),
        ("se:4,1+par", True),
        ("se:4,1+lookup+par", True),
        ("se:4,1+lookup8+par", True),  # suffixes in either order, keyed lookup first
        ("auto+par", True),
    ]
    assert specs[4].lookup == 15 and specs[4].gammas == (4, 1)
    assert [s.key for s in parse_strategies("sd+par", 2)][1:] == ["sd:1+par", "sd:3+par", "sd:5+par", "sd:8+par"]
    assert [s.key for s in parse_strategies("standard,standard+par", 2)] == ["standard", "standard+par"]
    assert [s.parallel_option for s in parse_strategies("standard,se:4,1+par,auto,auto+par", 2)] == [
        False,  # explicit strategies without +par run the members one after the other
        True,
        None,  # plain auto decides
        True,
    ]
    for bad in ("single+par", "single:0+par", "standard+par+par", "sd:3+parallel", "+par", "standard+lookup+par"):
        with pytest.raises(InvalidParameterError):
            parse_strategies(bad, 2)


def test_default_strategies_keep_sequential_rows():
    keys = [s.key for s in parse_strategies(None, 2)]
    for k in ("standard+par", "se:4,1+par", "se:4,1+lookup+par"):
        assert k in keys
    assert {"standard", "sd:3", "se:8,1", "auto"} <= set(keys)
    assert "se:4,1,1+par" in [s.key for s in parse_strategies(None, 3)]  # one gamma per member
    quick = [s.key for s in parse_strategies(QUICK["strategies"], 2)]
    assert [k for k in quick if k.endswith("+par")] == ["standard+par", "se:4,1+lookup+par"]
    assert {"standard", "se:1,1+lookup", "auto"} <= set(quick)


def test_labels_and_generate_keywords(ens):
    specs = {s.key: s for s in parse_strategies("standard+par,sd:3,se:4,1+lookup+par,auto", 2)}
    assert label(specs["standard+par"], ens) == "standard side by side"
    assert label(specs["se:4,1+lookup+par"], ens) == "se [4,1] + lookup side by side"
    assert label(specs["sd:3"], ens) == "sd γ=3" and label(specs["auto"], ens) == "auto"
    st = Setting("we-t0", "we", 0.0, ens, [0, 1])
    assert st.call(specs["standard"]) == dict(strategy="standard", gamma=None, lookup=None, parallel=False)
    assert st.call(specs["standard+par"])["parallel"] is True
    assert st.call(specs["se:4,1+lookup+par"]) == dict(strategy="se", gamma=[4, 1], lookup=15, parallel=True)
    assert st.call(specs["auto"])["parallel"] is None


def test_workloads():
    texts, ids = workload_prompts("chat", 20)
    assert ids == [f"chat/{i}" for i in range(20)] and len(CHAT_PROMPTS) == 20
    assert len(set(texts)) == 20 and all(len(t) > 20 and "def " not in t and "```" not in t for t in texts)
    assert sum("Summarise" in t for t in texts) >= 2  # summaries carry their text
    texts, ids = workload_prompts("humaneval", 2)
    assert ids == ["HumanEval/0", "HumanEval/1"] and texts[0].startswith("Complete this Python function")
    for workload, n in (("chat", 21), ("chat", 0), ("humaneval", 165), ("poems", 1)):
        with pytest.raises(InvalidParameterError):
            workload_prompts(workload, n)


@pytest.fixture(scope="module")
def par_report(ens, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench_par")
    rep = run_bench(
        ens,
        workload="chat",
        n_prompts=1,
        max_tokens=8,
        settings="we-t0,we-t1",
        strategies=PAR_STRATEGIES,
        out=out,
        progress=False,
    )
    return rep, out


def test_side_by_side_rows_run(par_report):
    rep, out = par_report
    c = rep["config"]
    assert c["workload"] == "chat" and c["prompts"] == ["chat/0"]
    assert c["strategies"] == ["standard", "standard+par", "sd:3+par", "se:4,1+lookup+par", "auto"]
    assert c["strategy_labels"]["standard+par"] == "standard side by side"
    labelled = dict(zip(c["row_labels"], rep["rows"]))
    greedy = {lab: r for lab, r in zip(c["row_labels"], rep["rows"]) if r["setting"] == "we-t0"}
    assert greedy["standard side by side"]["identical_to_standard"] == 1.0  # threads must not change tokens
    assert greedy["se [4,1] + lookup side by side"]["identical_to_standard"] == 1.0
    assert greedy["standard"]["speedup_vs_standard"] == 1.0 and not greedy["standard"]["parallel"]
    assert labelled["sd γ=3 side by side"]["strategy"] == "sd"
    for row in rep["rows"]:
        assert tuple(row) == ROW_FIELDS and row["tokens_per_second"] > 0
    md = (out / "bench.md").read_text()
    assert md.startswith("# edge-specens bench: ") and "chat prompts" in md.splitlines()[0]
    assert "| standard side by side |" in md and "1 chat prompts (chat/0)" in md
    assert json.loads((out / "bench.json").read_text())["config"]["workload"] == "chat"


def test_side_by_side_rows_ran_side_by_side(par_report):
    rep, _ = par_report
    for row, lab in zip(rep["rows"], rep["config"]["row_labels"]):
        assert row["parallel"] == lab.endswith("side by side") or row["strategy"] == "auto", (lab, row)


def test_markdown_names_the_workload(report):
    rep, _ = report
    assert "custom prompts" in markdown(rep).splitlines()[0]
    old = json.loads(json.dumps(rep))
    del old["config"]["workload"]  # reports written before workloads were HumanEval
    assert markdown(old).splitlines()[0].endswith("HumanEval prompts")


def test_noise_rule_helpers(ens):
    assert first_divergence([1, 2, 3], [1, 2, 3]) is None
    assert first_divergence([1, 2, 3], [1, 5, 3]) == 1
    assert first_divergence([1, 2], [1, 2, 3]) == 2
    prompt = ens.tokenize("hello world")
    m = near_tie_margin(ens, prompt, [])
    assert 0.0 <= m <= 1.0


def test_margins_by_batching_tell_noise_from_a_decision(ens):
    """The §4 diagnostic: r(a) - r(b) with the last 1, 2, 4, 8, 16 tokens as one batch. On f32 caches
    the batchings agree to float noise, and at s = 1 it is the single-decode margin with its sign."""
    prompt = ens.tokenize("hello world, this is a test of")
    out = ens.generate(prompt, max_tokens=12, temperature=0, strategy="standard").tokens
    prefix, a = out[:11], out[11]
    rows = []
    for m in ens.members:
        m.prefill([*prompt, *prefix])
        rows.append(m.evaluate([([*prompt, *prefix])[-1]], [0])[0][: ens.n_vocab])
    r = ens.spec.target(rows, SamplingParams(temperature=0))
    assert int(np.argmax(r)) == a
    b = int(np.argsort(r)[-2])  # the runner-up
    m = margins_by_batching(ens, prompt, prefix, a, b)
    assert sorted(m) == [1, 2, 4, 8, 16]
    assert m[1] == pytest.approx(near_tie_margin(ens, prompt, prefix), abs=1e-6)
    assert all(abs(v - m[1]) < 1e-3 for v in m.values()), m
    chunked = margins_by_chunking(ens, prompt, prefix, a, b, (1, 2, 3, 16))
    assert chunked[1] == pytest.approx(m[1], abs=1e-6)
    assert all(abs(v - m[1]) < 1e-3 for v in chunked.values()), chunked
    flipped = margins_by_batching(ens, prompt, prefix, b, a, sizes=(4,))
    assert flipped[4] == pytest.approx(-m[4], abs=1e-6)
    assert margins_by_batching(ens, prompt[:3], [], a, b, sizes=(1, 2, 8)).keys() == {1, 2}  # no longer than the text


def test_one_member_is_refused(tiny_models):
    one = Ensemble.from_paths([tiny_models["small"]], n_ctx=128, n_threads=1)
    try:
        with pytest.raises(InvalidParameterError, match="at least two members"):
            run_bench(one, prompts=["hi"], max_tokens=4, progress=False)
    finally:
        one.close()


def test_cli(tiny_models, tmp_path):
    out = tmp_path / "o"
    args = [
        "-m",
        str(tiny_models["small"]),
        "-m",
        str(tiny_models["big"]),
        "-c",
        "2048",
        "-t",
        "1",
        "--prompts",
        "1",
        "--max-tokens",
        "6",
        "--settings",
        "we-t0",
        "--strategies",
        "se:2,1",
        "--out",
        str(out),
        "--no-progress",
    ]
    res = CliRunner().invoke(bench, args)
    assert res.exit_code == 0, res.output
    assert "| se [2,1] |" in res.output
    rep = json.loads((out / "bench.json").read_text())
    assert rep["config"]["prompts"] == ["HumanEval/0"] and (out / "bench.png").exists()
    assert rep["config"]["workload"] == "humaneval"

    chat = args[:-4] + ["standard+par", "--workload", "chat", "--out", str(tmp_path / "chat"), "--no-progress"]
    res = CliRunner().invoke(bench, chat)
    assert res.exit_code == 0, res.output
    assert "| standard side by side |" in res.output
    assert json.loads((tmp_path / "chat" / "bench.json").read_text())["config"]["prompts"] == ["chat/0"]

    for workload, n, most in (("chat", 21, 20), ("humaneval", 165, 164)):
        bad = CliRunner().invoke(bench, args[:8] + ["--workload", workload, "--prompts", str(n), "--out", str(out)])
        assert bad.exit_code == 2, bad.output
        error = [line for line in bad.output.splitlines() if "Error" in line]
        assert error == [f"Error: --prompts must be between 1 and {most} for the {workload} workload, got {n}"]

    bad = CliRunner().invoke(bench, args[:-5] + ["--strategies", "bogus"])
    assert bad.exit_code == 2 and "bogus" in bad.output and "Traceback" not in bad.output
    three = [
        "-m",
        str(tiny_models["small"]),
        "-m",
        str(tiny_models["big"]),
        "-m",
        str(tiny_models["third"]),
        "--settings",
        "cd-t0",
        "--out",
        str(out),
    ]
    bad = CliRunner().invoke(bench, three)
    assert bad.exit_code == 2 and "exactly 2 members" in bad.output
