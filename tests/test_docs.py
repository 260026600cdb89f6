"""The README and docs cannot drift from the code: every block marked runnable is run here.

A fenced block preceded by an HTML comment `<!-- runnable -->` (invisible on GitHub and in MkDocs) is
run as printed, on the tests' tiny models: the working folder holds `small.gguf` and `big.gguf`, and
a preset folder shadows `qwen2.5-coder-duo` with those two files (user presets win over shipped ones),
so `-p qwen2.5-coder-duo` in the docs means the tiny pair here. Kinds:

- `<!-- runnable -->`: a bash block (each line a command) or a python block; must exit 0.
- `<!-- runnable: file=NAME -->`: the block's text is written to NAME for the blocks after it.
- `<!-- runnable: server -->`: a `serve` command, started in the background on a free port that
  replaces 8080 in it and in the `client` blocks after it; stopped with SIGINT at the end.
- `<!-- runnable: client -->`: run while that server runs.

Blocks without a marker are measurements that take hours or need the network (the hub, a second
machine): `test_every_unmarked_command_block_is_explained` keeps that list short and named.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from serving import free_port, wait_healthy

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
MARKED = re.compile(r"<!-- runnable(?::\s*(?P<kind>[\w=.\-]+))? -->\s*\n```(?P<lang>\w+)\n(?P<body>.*?)\n```", re.S)
FENCE = re.compile(r"^```(?P<lang>\w*)\n(?P<body>.*?)\n```", re.S | re.M)


@dataclass
class Block:
    doc: str
    kind: str  # "run", "server", "client", "file=NAME"
    lang: str
    body: str


def runnable_blocks(path: Path) -> list[Block]:
    text = path.read_text()
    return [Block(path.name, m["kind"] or "run", m["lang"], m["body"]) for m in MARKED.finditer(text)]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, tiny_models):
    """A folder holding small.gguf / big.gguf and a preset folder that maps the duo onto them."""
    work = tmp_path_factory.mktemp("docs")
    for name in ("small", "big"):
        shutil.copy(tiny_models[name], work / f"{name}.gguf")
    presets = work / "presets"
    presets.mkdir()
    (presets / "qwen2.5-coder-duo.toml").write_text(
        'name = "qwen2.5-coder-duo"\ndescription = "the tiny test pair standing in for the duo"\n'
        'method = "we"\nweights = [0.15, 0.85]\n'
        f'[[members]]\npath = "{work / "small.gguf"}"\n[[members]]\npath = "{work / "big.gguf"}"\n'
    )
    bindir = str(Path(sys.executable).parent)
    env = {
        **os.environ,
        "EDGE_SPECENS_PRESETS": str(presets),
        "PATH": bindir + os.pathsep + os.environ.get("PATH", ""),
        "EDGE_SPECENS_HISTORY": str(work / "history"),
        "PYTHONUNBUFFERED": "1",
    }
    return work, env


def _run(block: Block, cwd: Path, env: dict[str, str], port: int | None) -> subprocess.CompletedProcess:
    body = block.body if port is None else block.body.replace("8080", str(port))
    if block.lang == "python":
        argv = [sys.executable, "-c", body]
    else:
        argv = ["bash", "-euo", "pipefail", "-c", body]
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("doc", [p for p in DOCS if runnable_blocks(p)], ids=lambda p: p.name)
def test_runnable_blocks_run_as_printed(doc, workdir):
    work, env = workdir
    server: subprocess.Popen | None = None
    port: int | None = None
    try:
        for block in runnable_blocks(doc):
            where = f"{doc.name}: {block.kind} block:\n{block.body}"
            if block.kind.startswith("file="):
                (work / block.kind.removeprefix("file=")).write_text(block.body + "\n")
            elif block.kind == "server":
                port = free_port()
                command = re.sub(r"\s+#.*$", "", block.body.strip())  # its comment, not its arguments
                server = subprocess.Popen(
                    ["bash", "-c", f"exec {command} --port {port}"],
                    cwd=work,
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=(work / "serve.log").open("w"),  # a file, not a pipe nobody reads (it could fill)
                )
                wait_healthy(f"http://127.0.0.1:{port}", timeout=120, what=where)
            else:
                assert block.kind in ("run", "client"), where
                assert block.kind == "run" or server is not None, f"a client block before any server: {where}"
                r = _run(block, work, env, port if block.kind == "client" else None)
                assert r.returncode == 0, f"{where}\nexit {r.returncode}\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"
                assert "Traceback" not in r.stderr, f"{where}\n{r.stderr[-3000:]}"
    finally:
        if server is not None:
            server.send_signal(signal.SIGINT)
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                server.kill()


def test_readme_has_the_two_setup_commands_and_runnable_quick_starts():
    text = (ROOT / "README.md").read_text()
    setup = text[text.index("## Set up on a fresh machine") : text.index("## Quick start")]
    commands = [ln.split("#")[0].strip() for m in FENCE.finditer(setup) for ln in m["body"].splitlines()]
    assert [c for c in commands if c] == ["make demo", "make test"]
    kinds = {b.kind for b in runnable_blocks(ROOT / "README.md")}
    assert {"run", "server", "client"} <= kinds


def test_relative_links_in_the_readme_resolve():
    text = (ROOT / "README.md").read_text()
    for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", text):
        assert (ROOT / target).exists(), f"README links to a missing file: {target}"


# Command blocks left unmarked, each for a stated reason (they take hours or need the network).
UNMARKED_REASONS = {
    "hours": ("edge-specens bench", "edge-specens eval", "scripts/", "rpc_overhead", "busy_machine"),
    "network or another machine": ("ssh ", "rpc-server", "git clone", "127.0.0.1:50052", "--rpc", "api-key"),
    "a signature listing, not a program": ("weights=None, method=",),
    "a GPU build": ("CMAKE_ARGS",),
    "a developer's loop": ("make lint", "make test", "make test-fast"),
    "a real model's tool call (a random tiny model need not call): tests/test_tools_real.py": ("tool_calls[0]",),
}


def test_every_unmarked_command_block_is_explained():
    """A new command in the docs is either runnable here or named above with its reason."""
    unexplained = []
    for doc in DOCS:
        text = doc.read_text()
        for m in FENCE.finditer(text):
            if m["lang"] not in ("bash", "python", "sh"):
                continue
            before = text[: m.start()].rstrip().splitlines()[-1:] or [""]
            if before[0].startswith("<!-- runnable"):
                continue
            if doc.name == "README.md" and "make demo" in m["body"]:
                continue
            if not any(s in m["body"] for reasons in UNMARKED_REASONS.values() for s in reasons):
                unexplained.append(f"{doc.name}: {m['body'].splitlines()[0]}")
    assert not unexplained, "mark these runnable or give a reason in UNMARKED_REASONS:\n" + "\n".join(unexplained)
