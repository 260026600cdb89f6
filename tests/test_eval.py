"""`edge-specens eval humaneval` (quality/): code extraction, configurations, McNemar, resume, reports,
and `generate --provenance`. The sandbox has its own tests (test_sandbox.py)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from edge_specens.errors import InvalidParameterError
from edge_specens.quality import sandbox
from edge_specens.quality.extract import program
from edge_specens.quality.humaneval import check_reply, mcnemar_p, parse_configs, write_report
from edge_specens.quality.sandbox import isolation, run_program
from edge_specens.quality.sandbox.boundary import Isolation

SANDBOXED = isolation().available
NO_SANDBOX = [] if SANDBOXED else ["--unsafe-no-sandbox"]  # where bubblewrap is missing, say so and run

PROMPT = 'from typing import List\n\n\ndef add(xs: List[int]) -> int:\n    """Sum of xs."""\n'
TEST = "def check(candidate):\n    assert candidate([1, 2, 3]) == 6\n    assert candidate([]) == 0\n"


def _passes(reply: str) -> bool:
    return run_program(program(PROMPT, reply, "add"), tests=TEST, entry_point="add", unsafe=not SANDBOXED).passed


@pytest.mark.parametrize(
    "reply",
    [
        "Here you go:\n```python\ndef add(xs: List[int]) -> int:\n    return sum(xs)\n```\nDone.",
        "```\nfrom typing import List\ndef add(xs):\n    total = 0\n"
        "    for x in xs:\n        total += x\n    return total\n```",
        "Sure!\ndef add(xs: List[int]) -> int:\n    return sum(xs)\n\nThis sums the list.",
        "    return sum(xs)\n",
        "```python\n    return sum(xs)\n```",
        # an unclosed fence
        "```python\nimport math\n\ndef helper(v):\n    return v\n\ndef add(xs):\n"
        "    return sum(helper(x) for x in xs)\n",
        "A first try:\n```python\nprint('not it')\n```\n"
        "The function:\n```python\ndef add(xs):\n    return sum(xs)\n```",
    ],
)
def test_code_is_found_in_every_shape_of_reply(reply):
    assert _passes(reply)


def test_a_wrong_or_missing_answer_fails():
    assert not _passes("```python\ndef add(xs):\n    return 0\n```")
    assert not _passes("I cannot help with that.")


def test_a_reply_that_exits_before_the_tests_fails_as_such():
    """N7: the harness calls check itself; a reply's own main block ending the run is not a pass."""
    problem = {"prompt": PROMPT, "entry_point": "add", "test": TEST}
    reply = "```python\nimport sys\n\ndef add(xs):\n    return 0\n\nif __name__ == '__main__':\n    sys.exit(0)\n```"
    out = check_reply(problem, reply, unsafe=not SANDBOXED)
    assert not out.passed and out.status == "exited" and "before the tests finished" in out.detail
    assert check_reply(problem, "```python\ndef add(xs):\n    return sum(xs)\n```", unsafe=not SANDBOXED).passed


def test_configs_parse_and_bad_ones_are_refused():
    cs = parse_configs("single:0,single:1,we:0.5,we:0.2+0.8,cd:0.1,cd:0.3:0.05,we:0.5@standard", 2)
    assert [c.kind for c in cs] == ["single", "single", "we", "we", "cd", "cd", "we"]
    assert cs[3].weights == (0.2, 0.8) and cs[5].alpha == 0.05 and cs[4].alpha == 0.1
    assert cs[6].strategy == "standard"
    for bad in ("single:2", "we:1.5", "cd:x", "foo:1", "we:0.5,,cd:0.1", "we:0.5,we:0.5", "we:0.1+0.2+0.7"):
        with pytest.raises(InvalidParameterError):
            parse_configs(bad, 2)


def test_mcnemar_exact():
    assert mcnemar_p(0, 0) == 1.0
    assert mcnemar_p(5, 5) == 1.0
    assert abs(mcnemar_p(0, 6) - 2 / 64) < 1e-12  # all six discordant pairs one way
    assert mcnemar_p(10, 1) < 0.05 < mcnemar_p(6, 2)


def _cli(*args, timeout=600):
    return subprocess.run(
        [sys.executable, "-m", "edge_specens", *args], capture_output=True, text=True, timeout=timeout
    )


def test_eval_runs_resumes_and_reports(tiny_models, tmp_path):
    out = tmp_path / "ev"
    args = ["eval", "humaneval", "-m", str(tiny_models["small"]), "-m", str(tiny_models["big"]), "-c", "512"]
    args += ["--limit", "2", "-n", "24", "--configs", "single:1,we:0.5,we:0.5@standard,cd:0.1", "--out", str(out)]
    args += NO_SANDBOX
    r = _cli(*args)
    assert r.returncode == 0, r.stderr
    data = json.loads((out / "eval.json").read_text())
    assert data["settings"]["sandbox"] == ("bubblewrap" if SANDBOXED else "off")
    assert set(data["configs"]) == {"single:1", "we:0.5", "we:0.5@standard", "cd:0.1"}
    for c in data["configs"].values():
        assert set(c["problems"]) == {"HumanEval/0", "HumanEval/1"}
        for p in c["problems"].values():
            assert not p["passed"] and p["tokens"] > 0 and p["status"] in ("failed", "timeout", "error")
    summary = data["summary"]
    assert summary["reference"] == "single:1" and summary["rows"]["we:0.5"]["n"] == 2
    pair = summary["strategy_pairs"]["we:0.5 vs we:0.5@standard"]
    assert pair["outcomes_differ"] == 0
    assert len(pair["problems"]) == pair["outputs_differ"] and set(pair["problems"]) <= {"HumanEval/0", "HumanEval/1"}
    assert (out / "eval.png").stat().st_size > 0 and "McNemar" in (out / "eval.md").read_text()
    # resume: finished problems are not redone (a marker survives), a larger limit adds only the new one
    data["configs"]["cd:0.1"]["problems"]["HumanEval/0"]["reply"] = "MARKER"
    (out / "eval.json").write_text(json.dumps(data))
    r = _cli(*[a if a != "2" else "3" for a in args])
    assert r.returncode == 0, r.stderr
    again = json.loads((out / "eval.json").read_text())
    assert again["configs"]["cd:0.1"]["problems"]["HumanEval/0"]["reply"] == "MARKER"
    assert set(again["configs"]["cd:0.1"]["problems"]) == {"HumanEval/0", "HumanEval/1", "HumanEval/2"}
    r = _cli(*[a if a != "24" else "25" for a in args])  # other settings: refused, nothing mixed
    assert r.returncode == 2 and "other settings" in r.stderr


@pytest.mark.parametrize(
    "args, why",
    [
        (["eval", "mbpp"], "unknown benchmark"),
        (["eval", "humaneval", "--limit", "0"], "--limit"),
        (["eval", "humaneval", "--configs", "we:0.5,,x"], "--configs"),
    ],
)
def test_eval_bad_input_is_one_line_and_exit_2(args, why):
    r = _cli(*args, timeout=60)
    assert r.returncode == 2 and why in r.stderr and r.stderr.count("\n") == 1


def test_eval_without_a_sandbox_is_one_line_and_exit_2_unless_unsafe(monkeypatch, capsys):
    from edge_specens.cli import main

    monkeypatch.setattr(sandbox, "isolation", lambda: Isolation("none", False, "bubblewrap (bwrap) is not installed"))
    rc = main(["eval", "humaneval", "-m", "never-loaded.gguf"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "install bubblewrap" in err and "--unsafe-no-sandbox" in err
    rc = main(["eval", "humaneval", "-m", "never-loaded.gguf", "--unsafe-no-sandbox"])
    err = capsys.readouterr().err
    assert rc != 0 and "bubblewrap" not in err  # past the sandbox check: now it is the model that is missing


def test_the_report_says_when_the_sandbox_was_off(tmp_path):
    row = {"describe": "m alone", "pass_at_1": 0.5, "passed": 1, "n": 2, "tokens_per_second": 1.0}
    row |= {"won": 0, "lost": 0, "mcnemar_p": 1.0}
    summary = {"reference": "single:0", "rows": {"single:0": row}, "strategy_pairs": {}}
    for setting, says in (("off", "The sandbox was OFF"), ("bubblewrap", "Sandbox: bubblewrap")):
        data = {"settings": {"strategy": "auto", "temperature": 0.0, "max_tokens": 8, "sandbox": setting}}
        write_report(data | {"summary": summary}, tmp_path)
        assert says in (tmp_path / "eval.md").read_text()


def test_generate_provenance(tiny_models):
    base = ["generate", "-m", str(tiny_models["small"]), "-m", str(tiny_models["big"]), "-c", "512", "def f"]
    base += ["-n", "24", "--temp", "0", "--strategy", "se", "--lookup", "4"]
    r = _cli(*base, "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    prov = out["provenance"]
    assert [p["token"] for p in prov] == out["tokens"]
    assert "".join(p["text"] for p in prov) == out["text"]
    assert {p["how"] for p in prov} <= {"accepted", "bonus", "lookup", "resampled", "sampled"}
    assert all((p["member"] is not None) == (p["how"] in ("accepted", "bonus")) for p in prov)
    r = _cli(*base, "--provenance")
    assert r.returncode == 0 and "prompt lookup" in r.stderr and "resampled" in r.stderr


def test_a_problem_that_does_not_fit_fails_and_the_run_goes_on():
    from edge_specens.errors import ContextOverflowError
    from edge_specens.quality.humaneval import solve

    class TooSmall:
        def create_chat_completion(self, *a, **kw):
            raise ContextOverflowError("the prompt has 519 tokens but the context holds 512")

    rec = solve(TooSmall(), {"prompt": PROMPT, "entry_point": "add", "test": TEST}, "auto", 0.0, 16, 0)
    assert not rec["passed"] and rec["status"] == "error" and "519 tokens" in rec["detail"]


def test_a_few_problems_are_reported_as_a_smoke_test(tmp_path):
    """`eval --limit 2` printed "164 problems: ± 3.5 points" and plotted a dot on an axis of its own."""
    from edge_specens.quality.humaneval import interval, noise_note

    row = {"describe": "m alone", "pass_at_1": 0.5, "passed": 1, "n": 2, "tokens_per_second": 9.0}
    row |= {"won": 0, "lost": 0, "mcnemar_p": 1.0}
    summary = {"reference": "single:0", "rows": {"single:0": row}, "strategy_pairs": {}}
    data = {"settings": {"strategy": "auto", "temperature": 0.0, "max_tokens": 8, "sandbox": "bubblewrap"}}
    write_report(data | {"summary": summary}, tmp_path)
    md = (tmp_path / "eval.md").read_text()
    assert "164 problems" not in md and "2 problems only" in md and "far too few" in md
    assert "164 problems: pass@1 is noisy, ± ~3.6 points" in noise_note(164, 0.7)
    lo, hi = interval(1, 2)
    assert lo < 0.1 and hi > 0.9  # one of two passed: the interval spans most of the scale
    assert interval(2, 2)[0] > 0.3 and interval(2, 2)[1] == 1.0
