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
# and what ran: `auto`'s choice (issue 28: "auto" alone did not say)
RAN_STATS = {"algorithm", "gamma"}


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
    assert set(d["stats"]) == SPEC_STATS | PLACEMENT_STATS | RAN_STATS
    assert d["stats"]["strategy"] == "se" and d["stats"]["new_tokens"] == len(d["tokens"])
    assert d["stats"]["algorithm"] == "se" and d["stats"]["gamma"] == [3, 1]
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
        args = ["-m", str(tiny_models["small"]), "-m", str(tiny_models["other"]), "--vocab", "shared"]
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


# ---------------------------------------------------------------------------- the first five minutes (issue 28)
def test_no_arguments_prints_the_help_and_exits_0():
    """`edge-specens` alone, the first thing people type: the help, formatted, on stdout (as ollama does),
    not one `error: Usage: ...` line."""
    for args, expect in (([], "generate"), (["models"], "pull")):
        rc, out, err = run(args)
        assert rc == 0 and err == ""
        assert out.startswith("Usage: edge-specens") and "Commands:" in out and expect in out
        assert out.count("\n") > 5 and "error" not in out


def test_exit_codes_of_commands_reach_the_shell():
    """A command's click Exit(code) used to be dropped by main() (it returned 0)."""
    import click

    from edge_specens.cli.main import cli

    @cli.command("exit-test-only", hidden=True)
    def _exit():
        raise click.exceptions.Exit(3)

    try:
        assert main(["exit-test-only"]) == 3
    finally:
        cli.commands.pop("exit-test-only")


def test_llama_cpp_flags_are_ours_too(tiny_models):
    """-fa, -s, -cnv as llama.cpp users type them; -hf is in test_fetch (it needs a hub cache)."""
    base = ["generate", "hello world", *models_args(tiny_models), "-n", "6", "--temp", "0.9", "--json"]
    rc, out, err = run([*base, "-fa", "-s", "7"])  # -fa alone: on; -s: the seed
    assert rc == 0, err
    again = run([*base, "-fa", "off", "--seed", "7"])
    assert again[0] == 0 and json.loads(again[1])["tokens"] == json.loads(out)["tokens"]
    rc, _, err = run([*base, "-fa", "sometimes"])
    assert rc == 2 and "'sometimes' is not one of" in err
    rc, out, err = run(["generate", *models_args(tiny_models), "-cnv", "-n", "3", "--temp", "0"], input="hi\n/exit\n")
    assert rc == 0 and "edge-specens chat with" in err and ">>> " in out


def test_llama_cpp_flags_we_spell_otherwise_say_which_is_ours(tiny_models):
    rc, _, err = run(["generate", "hi", "-i"])
    assert rc == 2 and "edge-specens chat" in err and err.count("\n") == 1
    rc, _, err = run(["generate", "hi", "--color"])
    assert rc == 2 and "--provenance" in err
    rc, _, err = run(["-m", "model.gguf"])
    assert rc == 2 and "name a command first" in err and "edge-specens chat -m" in err


def test_the_summary_line_speaks_to_users(tiny_models):
    """`64 tokens, 9.7 tok/s, auto → se [5,1], 64 % of drafts accepted`: no llama_decode calls, no
    "finish length"; those stay in --json, chat's /stats -v and the bench."""
    import re

    rc, _, err = run(["generate", "hello world", *models_args(tiny_models), "-n", "8", "--temp", "0"])
    line = err.strip().splitlines()[-1]
    assert rc == 0 and re.fullmatch(r"\d+ tokens, [\d.]+ tok/s, auto → \w+.*", line), line
    assert "llama_decode" not in line and "finish" not in line
    rc, _, err = run(
        ["generate", "hello world", *models_args(tiny_models), "-n", "8", "--temp", "0", "--strategy", "se"]
    )
    assert re.search(r"^\d+ tokens, [\d.]+ tok/s, se \[\d+,\d+\]", err.strip().splitlines()[-1], re.M)


def test_an_interrupted_reply_says_so_not_finish_length():
    from edge_specens.result import GenerationResult, GenerationStats

    stats = GenerationStats("auto", new_tokens=40, seconds=2.0, tokens_per_second=20.0, acceptance_rate=0.64)
    stats.algorithm, stats.gamma, stats.note = "se", [5, 1], "interrupted"
    line = GenerationResult("...", [1] * 40, "length", stats).summary()
    assert line == "40 tokens, 20.0 tok/s, auto → se [5,1], 64 % of drafts accepted, interrupted"
    stats.note = None
    assert GenerationResult("...", [1] * 40, "length", stats).summary().endswith("64 % of drafts accepted")
    assert "llama_decode calls" in GenerationResult("...", [1] * 40, "length", stats).details()


def test_r_is_explained_in_the_help():
    rc, out, _ = run(["generate", "--help"])
    assert rc == 0 and "r is the ensemble's combined next-token distribution" in out
    assert "eval` defaults to 0" in out  # why the two commands' --temp defaults differ
    rc, out, _ = run(["chat", "--help"])
    assert rc == 0 and "combined next-token distribution" in out


def test_a_warning_never_lands_inside_the_answer(tiny_models, monkeypatch):
    """A warning logged while the text streams (the slow-machine one) starts on its own line, and
    stdout holds exactly the text and one final newline, as without the warning."""
    import logging

    import click

    from edge_specens.ensemble import Ensemble

    def stream(self, prompt, **kw):
        yield "def fib(n-2"
        logging.getLogger("edge_specens").warning("warning: the models ran 7.8x slower than calibrated")
        yield ")"

    monkeypatch.setattr(Ensemble, "stream", stream)

    @click.command()
    def wrapper():
        main(["generate", "x", *models_args(tiny_models), "-n", "4"])

    r = CliRunner().invoke(wrapper, [], catch_exceptions=False)
    assert "def fib(n-2\nwarning: the models ran 7.8x slower" in r.output  # stdout and stderr as on a screen
    assert r.stdout == "def fib(n-2\n)\n"


def test_eval_and_generate_agree_on_flags():
    rc, out, _ = run(["eval", "--help"])
    assert rc == 0 and "-n, --n-predict, --max-tokens" in out and "-s, --seed" in out
    assert "generate's 0.8" in out
    rc, out, _ = run(["generate", "--help"])
    assert "-n, --n-predict, --max-tokens" in out and "-s, --seed" in out


def test_ctrl_c_at_the_chat_prompt_keeps_the_chat_going(tiny_models):
    """A real SIGINT while the chat waits for input: the line is cleared, the way out is named, the
    next message is answered, and Ctrl-D (end of input) leaves with status 0."""
    import signal
    import time

    proc = subprocess.Popen(
        [sys.executable, "-m", "edge_specens", "chat", *models_args(tiny_models), "-n", "3", "--temp", "0"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:

        def read_until(stream, marker: bytes, count: int = 1) -> bytes:
            seen = b""
            while seen.count(marker) < count:
                ch = stream.read(1)
                assert ch, seen
                seen += ch
            return seen

        read_until(proc.stdout, b">>> ")
        time.sleep(0.3)
        proc.send_signal(signal.SIGINT)
        assert b"to leave the chat: Ctrl-D or /exit" in read_until(proc.stderr, b"/exit; the conversation is kept")
        proc.stdin.write(b"hello\n")
        proc.stdin.flush()
        read_until(proc.stdout, b">>> ", 2)  # a reply, then the next prompt
        proc.stdin.close()
        assert proc.wait(60) == 0
        assert b"Traceback" not in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
