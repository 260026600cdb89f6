"""The eval's sandbox (quality/sandbox.py): hostile completions are recorded as failed, the run goes on."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from edge_specens.quality.sandbox import run_program

OK = "def add(a, b):\n    return a + b\n\nassert add(2, 3) == 5\n"


def test_a_correct_program_passes_and_a_wrong_one_fails():
    assert run_program(OK).passed
    out = run_program(OK.replace("a + b", "a - b"))
    assert not out.passed and out.status == "failed" and "AssertionError" in out.detail


def test_a_program_that_loops_forever_times_out():
    t0 = time.monotonic()
    out = run_program("while True:\n    pass\n", timeout=2)
    assert out.status == "timeout" and time.monotonic() - t0 < 5


def test_a_program_that_sleeps_after_forking_children_cannot_hang_the_run():
    t0 = time.monotonic()
    out = run_program("import os\nwhile True:\n    os.fork()\n", timeout=3)
    assert not out.passed and "os.fork is not allowed" in out.detail
    out = run_program("import subprocess\nsubprocess.Popen(['sleep', '100'])\n", timeout=3)
    assert not out.passed and "subprocess.Popen is not allowed" in out.detail
    assert time.monotonic() - t0 < 8


def test_a_huge_allocation_fails():
    out = run_program("x = bytearray(50 * 1024**3)\n")
    assert not out.passed and "MemoryError" in out.detail


def test_writing_outside_the_folder_fails(tmp_path):
    target = tmp_path / "victim.txt"
    out = run_program(f"open({str(target)!r}, 'w').write('pwned')\n")
    assert not out.passed and "outside the working folder" in out.detail
    assert not target.exists()
    home = Path.home() / "edge_specens_sandbox_probe"
    out = run_program(f"import os\nos.mkdir({str(home)!r})\n")
    assert not out.passed and not home.exists()
    out = run_program("import shutil\nshutil.rmtree('/tmp/nothing-here')\n")
    assert not out.passed and "outside the working folder" in out.detail


def test_relative_paths_stay_in_a_throwaway_folder():
    out = run_program("open('scratch.txt', 'w').write('ok')\nimport os\nassert os.path.exists('scratch.txt')\n")
    assert out.passed
    assert not Path("scratch.txt").exists()


def test_killing_the_parent_fails_and_the_eval_lives():
    out = run_program("import os\nos.kill(os.getppid(), 9)\n")
    assert not out.passed and "os.kill is not allowed" in out.detail
    out = run_program("import os, signal\nos.killpg(0, signal.SIGKILL)\n")
    assert not out.passed
    assert os.getpid()  # still here


def test_no_network_and_no_native_escape():
    out = run_program("import socket\nsocket.create_connection(('127.0.0.1', 22), timeout=1)\n")
    assert not out.passed and "socket" in out.detail
    out = run_program("import ctypes\nctypes.CDLL(None)\n")
    assert not out.passed and "ctypes" in out.detail


def test_the_environment_is_scrubbed(monkeypatch):
    monkeypatch.setenv("SECRET_TOKEN", "hunter2")
    out = run_program("import os\nassert 'SECRET_TOKEN' not in os.environ, 'leaked'\n")
    assert out.passed


@pytest.mark.parametrize(
    "program",
    [
        "import math\nassert math.isclose(math.sqrt(2) ** 2, 2)\n",
        "import re, collections, typing, dataclasses, itertools, functools, heapq, hashlib\n",
    ],
)
def test_ordinary_code_is_not_hindered(program):
    assert run_program(program).passed, run_program(program).detail
