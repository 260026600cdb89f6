"""A user's day: chat that is pleasant to live in, defaults to trust, flags llama.cpp users type,
repetition control that stays exact, and no silently unconstrained structured output."""

from __future__ import annotations

import numpy as np
import pytest
from fakes import fake_ensemble
from test_cli import models_args, run

from edge_specens import Ensemble, InvalidParameterError
from edge_specens.cli.chat_repl import _read_message, describe, run_repl
from edge_specens.distributions import penalize
from edge_specens.params import GenerationOptions, SamplingParams


# ---------------------------------------------------------------------------- defaults
def test_sampling_defaults_are_llama_cpps():
    d = GenerationOptions()
    assert (d.temperature, d.top_k, d.top_p, d.min_p) == (0.8, 40, 0.95, 0.05)
    assert (d.repeat_penalty, d.frequency_penalty, d.presence_penalty, d.logit_bias) == (1.0, 0.0, 0.0, ())


# ---------------------------------------------------------------------------- penalties
def test_penalties_act_on_repeated_tokens_only():
    p = np.array([0.4, 0.3, 0.2, 0.1])
    assert penalize(p, [0, 1]) is p  # nothing asked: untouched
    out = penalize(p, [0, 0, 2], repeat=1.3)
    assert out[0] / out[1] < p[0] / p[1] and out[2] / out[3] < p[2] / p[3]
    assert np.isclose(out[1] / out[3], p[1] / p[3])  # unseen tokens keep their ratio
    freq = penalize(p, [0, 0, 2], frequency=0.5)
    assert np.isclose(np.log(freq[0] / freq[1]), np.log(p[0] / p[1]) - 1.0)  # used twice: 2 x 0.5
    pres = penalize(p, [0, 0, 2], presence=0.5)
    assert np.isclose(np.log(pres[0] / pres[1]), np.log(p[0] / p[1]) - 0.5)
    banned = penalize(p, [], bias=((0, -100.0),))
    assert banned[0] < 1e-40 and np.isclose(banned.sum(), 1.0)


def test_penalties_are_checked():
    with pytest.raises(InvalidParameterError, match="repeat_penalty"):
        SamplingParams(repeat_penalty=0)
    with pytest.raises(InvalidParameterError, match="logit_bias"):
        SamplingParams(logit_bias={"x": 1})
    with pytest.raises(InvalidParameterError, match="logit_bias"):
        SamplingParams(logit_bias={"3": 500})
    assert SamplingParams(logit_bias=["15=-100", "7+2"]).logit_bias == ((15, -100.0), (7, 2.0))


@pytest.mark.parametrize("strategy,gamma,parallel", [("se", [3, 1], False), ("sd", 2, False), ("se", [2, 1], True)])
def test_greedy_with_penalties_is_identical_across_strategies(strategy, gamma, parallel):
    ens = fake_ensemble(context=3)
    kw = dict(max_tokens=40, temperature=0, repeat_penalty=1.4, presence_penalty=0.3, logit_bias={5: -100})
    try:
        for p in range(5):
            prompt = [1, 2, 3 + p]
            ref = ens.generate(prompt, strategy="standard", **kw).tokens
            plain = ens.generate(prompt, max_tokens=40, temperature=0, strategy="standard").tokens
            out = ens.generate(prompt, strategy=strategy, gamma=gamma, parallel=parallel, **kw).tokens
            assert out == ref and 5 not in ref
            assert ref != plain or p  # the penalties change what is generated (at least once)
    finally:
        ens.close()


# ---------------------------------------------------------------------------- chat
def _chat(ens, lines, **kw):
    it = iter(lines)
    out: list[str] = []

    def read(prompt):
        try:
            return next(it)
        except StopIteration:
            raise EOFError from None

    run_repl(ens, kw.pop("sampling", {"temperature": 0}), read=read, write=lambda s="", **k: out.append(str(s)), **kw)
    return "".join(out)


def test_multi_line_input():
    lines = iter(['"""first', "second", 'third"""'])
    assert _read_message(lambda p: next(lines)) == "first\nsecond\nthird"
    lines = iter(["one \\", "two"])
    assert _read_message(lambda p: next(lines)) == "one \ntwo"
    lines = iter(['"""all in one"""'])
    assert _read_message(lambda p: next(lines)) == "all in one"


def test_chat_set_show_and_cut_notice(tiny_models):
    ens = Ensemble.from_paths([tiny_models["small"], tiny_models["big"]], n_ctx=512)
    try:
        out = _chat(ens, ["/set temp 0.2", "/set n 3", "/set system be brief", "/show", "hello", "/set temp hot"])
        assert "temperature = 0.2" in out and "max_tokens = 3" in out and "system: be brief" in out
        assert ens.last_result.stats.new_tokens <= 3
        if ens.last_result.finish_reason == "length":
            assert "reply cut at 3 tokens" in out
        assert "error:" in out  # /set temp hot
        # no cap by default: the reply runs until the model ends it or the context is full
        out = _chat(ens, ["hello"], sampling={"temperature": 0}, verbose=True)
        assert ens.last_result.stats.new_tokens > 128 or ens.last_result.finish_reason == "stop"
        assert "reply" in out and "tok/s" in out and "llama_decode" not in out
    finally:
        ens.close()


def test_verbose_summary_says_what_auto_ran_in_plain_words():
    ens = fake_ensemble()
    try:
        res = ens.generate([1, 2, 3], max_tokens=20, temperature=0, strategy="se", gamma=[3, 1], lookup=4)
        line = describe(res)
        assert "se [3,1] + lookup" in line and "accepted" in line and "prompt" in line
    finally:
        ens.close()


# ---------------------------------------------------------------------------- CLI
def test_prompt_flags_and_the_preset_flag_misread(tiny_models, tmp_path):
    f = tmp_path / "p.txt"
    f.write_text("hello from a file")
    for args in (["--prompt", "hello"], ["-f", str(f)]):
        rc, out, err = run(["generate", *args, *models_args(tiny_models), "-n", "3", "--temp", "0", "--json"])
        assert rc == 0, err
    rc, out, err = run(["generate", "-p", "Write a haiku about the sea", "-n", "3"])
    assert rc == 2 and "--prompt" in err and "preset" in err and len(err.strip().splitlines()) == 1
    rc, out, err = run(["generate", "x", "--prompt", "y", *models_args(tiny_models)])
    assert rc == 2 and "once" in err


def test_options_that_do_nothing_warn(tiny_models, caplog):
    rc, out, err = run(["generate", "hi", *models_args(tiny_models), "--mu", "0.3", "-n", "2", "--json"])
    assert rc == 0 and "--mu only applies to --mode cd" in err
    rc, out, err = run(["generate", "hi", *models_args(tiny_models)[:-2], "-c", "100000", "-n", "2", "--json"])
    assert rc == 0 and "trained on" in err + caplog.text  # a log warning: stderr outside pytest


def test_server_accepts_penalties_and_response_formats():
    pytest.importorskip("pydantic")
    from edge_specens.server.schema import ChatCompletionRequest

    msgs = [{"role": "user", "content": "hi"}]
    req = ChatCompletionRequest(messages=msgs, presence_penalty=0.5, frequency_penalty=0.2, logit_bias={"5": -100})
    assert req.unsupported() == []
    kw = req.generation_kwargs(16)
    assert kw["presence_penalty"] == 0.5 and kw["logit_bias"] == {"5": -100}
    bad = ChatCompletionRequest(messages=msgs, response_format={"type": "xml"})
    assert bad.unsupported()[0][0] == "response_format"
    good = ChatCompletionRequest(messages=msgs, response_format={"type": "json_object"})
    assert good.unsupported() == [] and good.generation_kwargs(16)["json_schema"] == {"type": "object"}
    assert ChatCompletionRequest(messages=msgs, response_format={"type": "text"}).unsupported() == []


# ---------------------------------------------------------------------------- own models
def _own_preset(folder, tiny_models, name="my-duo"):
    """A user's own preset: local files, no sizes or hashes."""
    (folder / f"{name}.toml").write_text(
        f'name = "{name}"\nmethod = "we"\nweights = [0.3, 0.7]\n'
        f'[[members]]\npath = "{tiny_models["small"]}"\n'
        f'[[members]]\npath = "{tiny_models["big"]}"\n'
    )


def test_own_preset_without_sizes_or_hashes(tiny_models, tmp_path, monkeypatch):
    import edge_specens

    _own_preset(tmp_path, tiny_models)
    monkeypatch.setenv("EDGE_SPECENS_PRESETS", str(tmp_path))
    assert edge_specens.preset_paths("my-duo") == [tiny_models["small"], tiny_models["big"]]
    ens = Ensemble.from_preset("my-duo", n_ctx=256)
    try:
        assert ens.spec.weights == (0.3, 0.7) and ens.generate("hi", max_tokens=3, temperature=0).tokens
    finally:
        ens.close()
    rc, out, err = run(["models", "list"])
    assert rc == 0 and f"[{tiny_models['small']}]" in out
    rc, out, err = run(["models", "info", "my-duo"])
    assert rc == 0 and out.count("architecture") == 2
    (tmp_path / "broken.toml").write_text('name = "broken"\nmethod = "we"\n[[members]]\npath = "nowhere.gguf"\n')
    with pytest.raises(edge_specens.FetchError, match="does not exist"):
        edge_specens.preset_paths("broken")


def test_progress_callable_gets_byte_counts(tiny_models, tmp_path, monkeypatch):
    """A pinned preset's first verification hashes the file: a GUI's callable sees the bytes."""
    import hashlib
    import shutil

    import edge_specens

    src = tiny_models["small"]
    data = src.read_bytes()
    cache = tmp_path / "cache"
    cache.mkdir()
    shutil.copy(src, cache / "pinned.gguf")
    (tmp_path / "pinned.toml").write_text(
        'name = "pinned"\nmethod = "we"\n[[members]]\nfile = "pinned.gguf"\n'
        f'size = {len(data)}\nsha256 = "{hashlib.sha256(data).hexdigest()}"\n'
    )
    monkeypatch.setenv("EDGE_SPECENS_PRESETS", str(tmp_path))
    monkeypatch.setenv("EDGE_SPECENS_CACHE", str(cache))
    seen: list[tuple[str, int, int]] = []
    assert edge_specens.preset_paths("pinned", progress=lambda what, done, total: seen.append((what, done, total)))
    assert seen and seen[-1][1] == seen[-1][2] == len(data)


def test_hugging_face_references(tiny_models, tmp_path):
    """owner/repo:file.gguf and hf://owner/repo/file.gguf resolve through huggingface_hub's cache
    (offline here: a cache laid out as the hub lays it out)."""
    import shutil
    import subprocess
    import sys

    from edge_specens.fetch import hub_reference

    assert hub_reference("owner/repo:model.gguf") == ("owner/repo", "model.gguf")
    assert hub_reference("hf://owner/repo/model.gguf") == ("owner/repo", "model.gguf")
    assert hub_reference("models/owner/model.gguf") is None and hub_reference("model.gguf") is None
    snap = tmp_path / "hub" / "models--owner--repo" / "snapshots" / ("a" * 40)
    snap.mkdir(parents=True)
    shutil.copy(tiny_models["small"], snap / "model.gguf")
    (tmp_path / "hub" / "models--owner--repo" / "refs").mkdir()
    (tmp_path / "hub" / "models--owner--repo" / "refs" / "main").write_text("a" * 40)
    env = {**__import__("os").environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"}
    code = (
        "from edge_specens import Ensemble\n"
        "e = Ensemble.from_paths(['owner/repo:model.gguf', 'hf://owner/repo/model.gguf'], n_ctx=128)\n"
        "print(e.generate('hi', max_tokens=2, temperature=0).stats.new_tokens)"
    )
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    missing = subprocess.run(
        [sys.executable, "-m", "edge_specens", "generate", "hi", "-m", "owner/nothing:x.gguf"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert missing.returncode == 1 and "owner/nothing" in missing.stderr and "Traceback" not in missing.stderr


# ---------------------------------------------------------------------------- asyncio and streaming usage
def test_asyncio_api_does_not_block_the_loop(duo):
    import asyncio

    ens = duo
    ref = ens.generate([1, 2, 3], max_tokens=30, temperature=0, strategy="se", gamma=[3, 1])

    async def main():
        ticks = 0
        running = True

        async def ticker():
            nonlocal ticks
            while running:
                ticks += 1
                await asyncio.sleep(0)

        t = asyncio.create_task(ticker())
        res = await ens.agenerate([1, 2, 3], max_tokens=30, temperature=0, strategy="se", gamma=[3, 1])
        pieces = [p async for p in ens.astream([1, 2, 3], max_tokens=30, temperature=0, strategy="se", gamma=[3, 1])]
        early = ens.astream([1, 2, 3], max_tokens=500, temperature=0, strategy="se", gamma=[3, 1])
        async for _ in early:
            break
        await early.aclose()
        stopped = ens.last_result
        chat = await ens.acreate_chat_completion([{"role": "user", "content": "hi"}], max_tokens=5, temperature=0)
        chunks = [
            c
            async for c in await ens.acreate_chat_completion(
                [{"role": "user", "content": "hi"}],
                stream=True,
                max_tokens=5,
                temperature=0,
                stream_options={"include_usage": True},
            )
        ]
        running = False
        await t
        return res, pieces, stopped, chat, chunks, ticks

    res, pieces, stopped, chat, chunks, ticks = asyncio.run(main())
    assert res.tokens == ref.tokens and "".join(pieces) == ref.text
    assert stopped.stats.note == "cancelled" and len(stopped.tokens) < 500
    assert chat["choices"][0]["message"]["role"] == "assistant"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] >= 1
    assert "usage" not in chunks[-2] and chunks[-2]["choices"][0]["finish_reason"]
    assert ticks > 10  # the loop ran while the ensemble worked
    ens.generate([1, 2], max_tokens=3, wait=False)  # and the ensemble is free again


def test_chat_in_a_terminal_keeps_history_and_takes_multi_line_input(tiny_models, tmp_path):
    """The REPL through a pseudo-terminal: readline is on (the history file is written), a \"\"\" block
    is one message, an up-arrow recalls the last line."""
    import os
    import pty
    import select
    import sys
    import time

    history = tmp_path / "history"
    args = [sys.executable, "-m", "edge_specens", "chat", *models_args(tiny_models), "--temp", "0", "-n", "4"]
    pid, fd = pty.fork()
    if pid == 0:  # the child: the chat, on the terminal
        os.environ["EDGE_SPECENS_HISTORY"] = str(history)
        os.execv(sys.executable, args)
    seen = b""

    def until(marker: bytes, times: int = 1, timeout: float = 60.0) -> None:
        nonlocal seen
        end = time.monotonic() + timeout
        while seen.count(marker) < times:
            assert time.monotonic() < end, f"no {marker!r} in {seen[-500:]!r}"
            if select.select([fd], [], [], 0.2)[0]:
                try:
                    seen += os.read(fd, 4096)
                except OSError:
                    break

    try:
        until(b">>> ")
        for line in (b'"""first line', b"second line", b'end"""'):
            os.write(fd, line + b"\r")
            time.sleep(0.2)
        until(b"[reply cut at 4 tokens")
        until(b">>> ")
        os.write(fd, b"/show\r")
        until(b"temperature: 0")
        os.write(fd, b"\x1b[A\r")  # up arrow: /show again, from readline's history
        until(b"temperature: 0", times=2)
        os.write(fd, b"/exit\r")
        _, status = os.waitpid(pid, 0)
    finally:
        try:
            os.kill(pid, 9)
        except OSError:
            pass
        os.close(fd)
    assert os.WEXITSTATUS(status) == 0
    assert seen.count(b"temperature: 0") >= 2  # the recalled /show ran
    assert "/show" in history.read_text()


# ---------------------------------------------------------------------------- the first five minutes (issue 28)
def test_ctrl_c_at_the_chat_prompt_clears_the_line_and_keeps_the_conversation(duo):
    """As ollama and the Python REPL: Ctrl-C at the prompt drops what was typed and says how to
    leave; the chat goes on with its history (it used to end the chat, exit 130, history lost)."""
    lines = iter(["hello", KeyboardInterrupt, '"""half a message', KeyboardInterrupt, "again"])
    out: list[str] = []

    def read(prompt):
        line = next(lines, EOFError)
        if isinstance(line, type):
            raise line()
        return line

    run_repl(duo, {"temperature": 0, "max_tokens": 4}, read=read, write=lambda s="", **k: out.append(str(s)))
    text = "\n".join(out)
    assert text.count("to leave the chat: Ctrl-D or /exit") == 2
    alone = duo.chat_template.tokens([{"role": "user", "content": "again"}])
    assert duo.last_result.stats.prompt_tokens > len(alone) + 4  # "hello" and its reply are still there


def test_chat_help_and_clear_setting_errors(duo):
    out = _chat(
        duo, ["/help", "/set temp hot", "/set n lots", "/set parallel maybe", "/set top-k 5", "hi", "/stats -v"]
    )
    for command in ("/set temp 0.2", "/show", "/stats", "/reset", "/exit", "/help"):
        assert command in out
    assert "unknown command" not in out
    assert "error: /set temp takes a number, got 'hot' (e.g. /set temp 0.2)" in out
    assert "error: /set n takes a whole number, got 'lots'" in out
    assert "error: /set parallel takes on, off or auto, got 'maybe'" in out
    assert "could not convert" not in out and "invalid literal" not in out  # no Python conversion messages
    assert "top_k = 5" in out and "llama_decode calls" in out  # /stats -v: what each member did


def test_a_cached_preset_load_reports_its_stages(tiny_models, tmp_path, monkeypatch):
    """A desktop app's progress callable hears from a load whose files are all cached (10-20 s for the
    duo): the files checked, the headers read, each member loaded."""
    _own_preset(tmp_path, tiny_models)
    monkeypatch.setenv("EDGE_SPECENS_PRESETS", str(tmp_path))
    seen: list[tuple[str, int, int]] = []
    ens = Ensemble.from_preset("my-duo", n_ctx=256, progress=lambda what, done, total: seen.append((what, done, total)))
    ens.close()
    assert [s for s in seen if s[0] == "check files"] == [("check files", k, 2) for k in range(3)]
    assert ("read headers", 2, 2) in seen
    assert [s for s in seen if s[0] == "load models"] == [("load models", k, 2) for k in range(3)]
    stages = [what for what, _, _ in seen]
    assert stages.index("check files") < stages.index("read headers") < stages.index("load models")
