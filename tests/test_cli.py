"""The CLI: docs/design.md §9 flags and JSON, exit 2 for bad usage, 1 for failures, one line, no traceback."""

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from edge_specens.cli import main

SPEC_STATS = {
    "strategy",
    "new_tokens",
    "seconds",
    "tokens_per_second",
    "acceptance_rate",
    "member_calls",
    "member_tokens",
}
# and how the members ran (side by side or not; each one's threads and device)
PLACEMENT_STATS = {"parallel", "member_threads", "member_devices"}


def run(args, input=None):
    """In-process through main() (the same error mapping as the console script)."""
    runner = CliRunner()
    code = {}

    def invoke():
        code["rc"] = main(args)

    import click

    @click.command()
    def wrapper():
        invoke()

    r = runner.invoke(wrapper, [], input=input, catch_exceptions=False)
    return code.get("rc", r.exit_code), r.stdout, r.stderr


def models_args(tiny_models):
    return ["-m", str(tiny_models["small"]), "-m", str(tiny_models["big"]), "-c", "512"]


def test_generate_json_shape(tiny_models):
    rc, out, err = run(
        [
            "generate",
            "hello world",
            *models_args(tiny_models),
            "--temp",
            "0",
            "-n",
            "12",
            "--strategy",
            "se",
            "--gamma",
            "3,1",
            "--json",
        ]
    )
    assert rc == 0, err
    d = json.loads(out)
    assert set(d) == {"text", "tokens", "finish_reason", "stats", "provenance"}  # provenance: README, issue 15
    assert [p["token"] for p in d["provenance"]] == d["tokens"]
    assert set(d["stats"]) == SPEC_STATS | PLACEMENT_STATS
    assert d["stats"]["strategy"] == "se" and d["stats"]["new_tokens"] == len(d["tokens"])
    assert (len(d["tokens"]) == 12 and d["finish_reason"] == "length") or d["finish_reason"] == "stop"
    assert len(d["stats"]["member_calls"]) == 2


def test_generate_flags_match_the_api(tiny_models, duo):
    rc, out, _ = run(
        [
            "generate",
            "the value",
            *models_args(tiny_models),
            "--mode",
            "we",
            "--weights",
            "0.5,0.5",
            "--temp",
            "0.9",
            "--top-k",
            "20",
            "--top-p",
            "0.95",
            "--min-p",
            "0.01",
            "--seed",
            "7",
            "-n",
            "10",
            "--strategy",
            "standard",
            "--json",
        ]
    )
    assert rc == 0
    api = duo.generate(
        "the value", max_tokens=10, temperature=0.9, top_k=20, top_p=0.95, min_p=0.01, seed=7, strategy="standard"
    )
    assert json.loads(out)["tokens"] == api.tokens


def test_generate_streams_text_and_stats(tiny_models):
    rc, out, err = run(["generate", "hello", *models_args(tiny_models), "-n", "8", "--seed", "1"])
    assert rc == 0 and "tok/s" in err


def test_cd_mode_and_chat_flag(tiny_models):
    rc, out, err = run(
        ["generate", "hi", *models_args(tiny_models), "--mode", "cd", "--mu", "0.2", "--chat", "-n", "5", "--json"]
    )
    assert rc == 0, err
    assert json.loads(out)["stats"]["new_tokens"] <= 5


@pytest.mark.parametrize(
    "args,code,words",
    [
        (["generate"], 2, "give a prompt"),
        (["generate", "x", "--temp", "abc"], 2, "temp"),
        (["generate", "x", "--weights", "a,b"], 2, "weights"),
        (["generate", "x", "--strategy", "nope"], 2, "unknown strategy"),
        (["generate", "x", "--gamma", "0"], 2, "gamma"),
        (["generate", "x", "-n", "0"], 2, "max_tokens"),
        (["generate", "x", "--top-p", "7"], 2, "top_p"),
        (["generate", "x", "--weights", "1,2,3"], 2, "weights"),
        (["nonsense"], 2, "No such command"),
        (["models", "pull", "no-such-preset"], 2, "qwen2.5-coder-duo"),
    ],
)
def test_bad_usage_exits_2(tiny_models, args, code, words):
    if args[0] == "generate" and len(args) > 1:
        args = args[:2] + models_args(tiny_models) + args[2:]
    rc, out, err = run(args)
    assert rc == code
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and words in lines[0] and "Traceback" not in err


@pytest.mark.parametrize("make", ["missing", "notgguf", "vocab"])
def test_failures_exit_1(tiny_models, tmp_path, make):
    if make == "missing":
        args = ["-m", str(tmp_path / "nope.gguf"), "-m", str(tiny_models["big"])]
    elif make == "notgguf":
        p = tmp_path / "x.gguf"
        p.write_bytes(b"hello" * 100)
        args = ["-m", str(p), "-m", str(tiny_models["big"])]
    else:
        args = ["-m", str(tiny_models["small"]), "-m", str(tiny_models["other"])]
    rc, out, err = run(["generate", "hi", *args])
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc == 1 and len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in err


def test_prompt_over_context_exits_2(tiny_models):
    rc, _, err = run(
        ["generate", "hello " * 300, "-m", str(tiny_models["small"]), "-m", str(tiny_models["big"]), "-c", "64"]
    )
    assert rc == 2 and "context" in err


def test_models_info_and_list(tiny_models):
    rc, out, _ = run(["models", "info", str(tiny_models["small"])])
    assert rc == 0 and "architecture" in out and "llama" in out and "vocab size" in out
    rc, out, _ = run(["models", "list"])
    assert rc == 0 and "qwen2.5-coder-duo" in out and "smollm2-135m" in out


def test_chat_repl(tiny_models):
    rc, out, err = run(
        ["chat", *models_args(tiny_models), "-n", "6", "--temp", "0"],
        input="hello\n/stats\n/reset\nhi again\n/bogus\n/exit\n",
    )
    assert rc == 0
    assert "tok/s" in err and "history cleared" in err and "unknown command" in err


def test_real_subprocess_exit_codes_and_no_traceback(tiny_models, tmp_path):
    exe = [sys.executable, "-m", "edge_specens"]
    ok = subprocess.run(
        exe + ["generate", "hello", *models_args(tiny_models), "-n", "4", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ok.returncode == 0 and json.loads(ok.stdout)["stats"]["new_tokens"] <= 4
    bad = subprocess.run(
        exe + ["generate", "hello", "-m", str(tmp_path / "none.gguf")], capture_output=True, text=True, timeout=120
    )
    assert bad.returncode == 1 and bad.stderr.strip().count("\n") == 0 and "Traceback" not in bad.stderr
    usage = subprocess.run(exe + ["generate"], capture_output=True, text=True, timeout=120)
    assert usage.returncode == 2 and "Traceback" not in usage.stderr
