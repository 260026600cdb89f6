"""Stopping `serve` while a stream runs: the stream ends with an error event, a waiting request gets
503 `shutting_down` as JSON, the process exits within 2 s with status 130 and prints no traceback.
Uses the real duo, whose generation is slow enough to be caught mid-stream."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time

import httpx
import pytest
from serving import start_serve

pytestmark = pytest.mark.real


def test_sigint_during_a_stream_stops_quickly_and_cleanly(pulled):
    proc, url, lines = start_serve(["-p", "qwen2.5-coder-duo", "-c", "1024"], stdout=subprocess.PIPE)
    try:
        events, queued = [], {}
        got_some = threading.Event()

        def stream():
            body = {"prompt": "Write a long story about a robot.", "max_tokens": 400, "stream": True, "temperature": 1}
            with httpx.stream("POST", f"{url}/v1/completions", json=body, timeout=60) as r:
                for line in r.iter_lines():
                    if line.startswith("data: "):
                        events.append(line[6:])
                        if len(events) >= 4:
                            got_some.set()

        def waiting():
            r = httpx.post(f"{url}/v1/completions", json={"prompt": "hi", "max_tokens": 5}, timeout=60)
            queued["status"], queued["body"] = r.status_code, r.json()

        t1 = threading.Thread(target=stream)
        t1.start()
        assert got_some.wait(60)
        t2 = threading.Thread(target=waiting)
        t2.start()
        deadline = time.monotonic() + 10
        while httpx.get(f"{url}/health", timeout=5).json()["waiting"] < 1:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(30)
        elapsed = time.monotonic() - t0
        t1.join(10)
        t2.join(10)
        err = "".join(lines) + proc.stderr.read()
        assert elapsed < 2.0, f"exit took {elapsed:.1f} s"
        assert rc == 130, err
        assert "Traceback" not in err and "CancelledError" not in err, err
        last = json.loads(events[-1])
        assert last["error"]["code"] == "shutting_down", events[-3:]
        assert queued["status"] == 503 and queued["body"]["error"]["code"] == "shutting_down"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _default_sigint() -> None:
    """A test runner started in the background may ignore SIGINT, and children inherit that (then
    Python installs no KeyboardInterrupt handler): give the CLI the disposition a terminal gives it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _interrupt_after(args: list[str], seconds: float, first_output: bool = False) -> subprocess.CompletedProcess:
    """Ctrl-C after `seconds`, or (first_output) once the first character is printed: a busy machine
    may take longer than any fixed delay to load the models."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge_specens", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_default_sigint,
    )
    head = proc.stdout.read(1) if first_output else ""
    time.sleep(seconds)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    return subprocess.CompletedProcess(proc.args, proc.returncode, head + out, err)


def test_ctrl_c_exits_130_in_every_mode():
    duo = ["-p", "qwen2.5-coder-duo", "-c", "1024"]
    story = "Write a long story about a robot."
    # --json: still one JSON object on stdout, with what was generated and the note
    r = _interrupt_after(["generate", story, *duo, "-n", "400", "--json", "--temp", "0"], 8.0)
    assert r.returncode == 130, r.stderr
    d = json.loads(r.stdout)
    assert d["note"] == "interrupted" and isinstance(d["text"], str)
    assert "Traceback" not in r.stderr
    # ... also while the models are still loading (llama.cpp used to swallow that Ctrl-C)
    r = _interrupt_after(["generate", story, *duo, "-n", "400", "--json", "--temp", "0"], 1.5)
    assert r.returncode == 130 and json.loads(r.stdout)["note"] == "interrupted", (r.stdout, r.stderr)
    # streaming: the text so far, the summary, then status 130
    r = _interrupt_after(["generate", story, *duo, "-n", "400", "--temp", "0"], 1.0, first_output=True)
    assert r.returncode == 130 and "[interrupted]" in r.stderr and "Traceback" not in r.stderr
    # chat, at the prompt after one reply: Ctrl-C clears the line and says how to leave (as ollama and
    # the Python REPL); the chat goes on until Ctrl-D (Ctrl-C during a reply only stops the reply)
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge_specens", "chat", *duo, "-n", "4", "--temp", "0"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=_default_sigint,
    )
    proc.stdin.write(b"hi\n")
    proc.stdin.flush()
    seen = b""
    while seen.count(b">>> ") < 2:  # the first prompt, then the one after the reply
        ch = proc.stdout.read(1)
        assert ch, proc.stderr.read()
        seen += ch
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    err = b""
    while b"to leave the chat" not in err:
        ch = proc.stderr.read(1)
        assert ch, err
        err += ch
    proc.stdin.close()  # Ctrl-D
    assert proc.wait(30) == 0
    assert b"Traceback" not in err + proc.stderr.read()
