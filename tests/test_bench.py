"""The bench on tiny GGUF members: report fields, files, exactness and speed-up bookkeeping."""

import json

import pytest
from click.testing import CliRunner

from edge_specens import Ensemble, InvalidParameterError
from edge_specens.bench import ROW_FIELDS, build_settings, parse_settings, parse_strategies, run_bench
from edge_specens.cli.bench import bench
from edge_specens.exactness import first_divergence, near_tie_margin

PROMPTS = ["hello world", "def f"]
STRATEGIES = "single,standard,sd:3,se:1,1,se:4,1,se:1,1+lookup,auto"


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
    for title in ("WE, T = 0", "WE, T = 1", "CD, T = 0", "CD, T = 1"):
        assert title in md
    assert "speed-up = (total generated tokens / total seconds)" in md
    assert "bench.png" in md


def test_json_shape(report, ens, tiny_models):
    rep, _ = report
    assert {"rows", "machine", "config", "memory"} <= set(rep)
    n_strat = len(parse_strategies(STRATEGIES, 2))
    assert len(rep["rows"]) == 4 * n_strat
    for row in rep["rows"]:
        assert tuple(row) == ROW_FIELDS  # exactly these fields, in this order
        assert len(row["member_calls_per_token"]) == len(row["member_tokens_per_token"]) == 2
        assert row["tokens_per_second"] > 0 and row["speedup_vs_standard"] > 0
        assert 0.0 <= row["overhead_fraction"] <= 1.0
        assert row["peak_rss_mb"] > 0 and row["rss_mb"] > 0
        assert row["predicted_speedup"] is None or isinstance(row["predicted_speedup"], float)
    looked = [r for r in rep["rows"] if r["lookup"]]
    assert len(looked) >= 4 and all(r["strategy"] in ("se", "auto") for r in looked)
    m = rep["machine"]
    for k in ("cpu", "cores", "threads", "n_gpu_layers", "llama_cpp_python", "date"):
        assert m[k] is not None
    assert m["threads"] == 1 and m["n_gpu_layers"] == 0
    mem = rep["memory"]
    assert mem["model_files_bytes"] == tiny_models["small"].stat().st_size + tiny_models["big"].stat().st_size
    assert mem["peak_rss_bytes"] > 0 and mem["peak_rss_over_model_files"] > 0
    assert len(rep["runs"]) == 4 * n_strat * len(PROMPTS)
    assert rep["config"]["prompts"] == ["prompt-0", "prompt-1"]


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
    assert [s.id for s in sets] == ["we-t0", "we-t1", "cd-t0", "cd-t1"]
    assert sets[0].ens is ens and sets[0].ens is sets[1].ens
    cd = sets[2].ens
    assert cd is sets[3].ens and cd.spec.method == "cd" and cd.spec.mu == 0.1
    assert cd.members[0] is ens.members[1] and cd.members[1] is ens.members[0]  # bigger model = expert


def test_parsing():
    keys = [s.key for s in parse_strategies("sd:3,se:8,1,auto", 2)]
    assert keys == ["standard", "sd:3", "se:8,1", "auto"]  # standard always runs
    assert [s.key for s in parse_strategies("se", 2)] == ["standard", "se:1,1", "se:3,1", "se:5,1", "se:8,1", "se:16,1"]
    assert [s.key for s in parse_strategies(None, 2)][:3] == ["single:0", "single:1", "standard"]
    assert parse_settings("we") == ["we-t0", "we-t1"]
    look = parse_strategies("se:1,1+lookup,se:3,1+lookup8", 2)[1:]
    assert [(s.key, s.gamma, s.lookup) for s in look] == [("se:1,1+lookup", (1, 1), 15), ("se:3,1+lookup8", (3, 1), 8)]
    for bad in ("bogus", "se:8", "single:5", "sd:0", "sd:3+lookup", "se:1,1+lookup0", "auto+lookup"):
        with pytest.raises(InvalidParameterError):
            parse_strategies(bad, 2)
    with pytest.raises(InvalidParameterError):
        parse_settings("xx-t0")


def test_noise_rule_helpers(ens):
    assert first_divergence([1, 2, 3], [1, 2, 3]) is None
    assert first_divergence([1, 2, 3], [1, 5, 3]) == 1
    assert first_divergence([1, 2], [1, 2, 3]) == 2
    prompt = ens.tokenize("hello world")
    m = near_tie_margin(ens, prompt, [])
    assert 0.0 <= m <= 1.0


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
