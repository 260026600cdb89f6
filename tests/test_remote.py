"""Members on other machines (remote/): endpoints, probes, and a real llama.cpp RPC server on localhost.

The first half needs no RPC build: endpoint parsing, the hello probe against fake servers (a closed
port, an HTTP server, a silent listener, a wrong protocol version), placement. The second half starts
`edge-specens rpc-server` subprocesses serving tiny models: rows equal the local member's, greedy
tokens equal the all-local ensemble's, and a server killed mid-generation gives MemberLostError
(API, CLI, serve) while the caller lives on and a restarted server serves the next request.
"""

from __future__ import annotations

import http.server
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from contextlib import contextmanager

import numpy as np
import pytest
from serving import free_port

from edge_specens.errors import EndpointError, InvalidParameterError, MemberLostError, RpcUnavailableError
from edge_specens.remote.endpoint import Endpoint, parse_endpoint, probe, split_model_reference

# ---------------------------------------------------------------------------- endpoints


@pytest.mark.parametrize(
    "text, why",
    [
        ("192.168.1.5:", "no port"),
        ("192.168.1.5", "HOST:PORT"),
        ("host:0", "1 to 65535"),
        ("host:65536", "1 to 65535"),
        ("host:http", "1 to 65535"),
        ("::1:50052", "IPv6"),
        ("fe80::1", "IPv6"),
        ("[::1]:50052", "IPv4 only"),
        (":50052", "HOST:PORT"),
    ],
)
def test_bad_endpoints_are_refused_at_parse_time(text, why):
    with pytest.raises(InvalidParameterError, match=why):
        parse_endpoint(text)


def test_endpoints_parse():
    assert parse_endpoint("192.168.1.5:50052") == Endpoint("192.168.1.5", 50052)
    assert parse_endpoint(" pi.local:1 ") == Endpoint("pi.local", 1)
    assert parse_endpoint("localhost:65535").is_loopback
    assert not parse_endpoint("10.0.0.2:50052").is_loopback


def test_model_references(tmp_path):
    assert split_model_reference("m.gguf@10.0.0.2:50052") == ("m.gguf", Endpoint("10.0.0.2", 50052))
    assert split_model_reference("dir/m.gguf") == ("dir/m.gguf", None)
    odd = tmp_path / "model@v2.gguf"  # a real file whose name has '@' loads locally
    odd.write_bytes(b"")
    assert split_model_reference(str(odd)) == (str(odd), None)
    with pytest.raises(InvalidParameterError, match="no port"):
        split_model_reference("m.gguf@10.0.0.2:")


def test_placement_is_checked_before_loading(tiny_models):
    from edge_specens import Ensemble

    small, big = str(tiny_models["small"]), str(tiny_models["big"])
    with pytest.raises(InvalidParameterError, match="one server serves one member"):
        Ensemble.from_paths([f"{small}@127.0.0.1:9", f"{big}@127.0.0.1:9"])
    with pytest.raises(InvalidParameterError, match="rpc has 1 values for 2 members"):
        Ensemble.from_paths([small, big], rpc=["127.0.0.1:9"])
    with pytest.raises(InvalidParameterError, match="placed twice"):
        Ensemble.from_paths([small, f"{big}@127.0.0.1:9"], rpc=[None, "127.0.0.1:8"])
    with pytest.raises(InvalidParameterError, match="1 to 65535"):
        Ensemble.from_paths([small, big], rpc=[None, "127.0.0.1:0"])


def test_without_rpc_the_error_names_the_rebuild(tiny_models, monkeypatch):
    from edge_specens import Ensemble
    from edge_specens.remote import backend

    monkeypatch.setattr(backend, "supports_rpc", lambda: False)
    with pytest.raises(RpcUnavailableError, match="GGML_RPC=on"):
        Ensemble.from_paths([tiny_models["small"]], rpc=["127.0.0.1:9"])


def test_remote_members_take_no_local_cores():
    from edge_specens.auto.scheduler import candidate_splits
    from edge_specens.threads import even_split

    assert even_split(4, [10, None]) == (4, 1)
    assert even_split(5, [10, None, 20]) == (2, 1, 3)
    assert candidate_splits(8, [10, None, 20]) == [(4, 1, 4), (2, 1, 6), (6, 1, 2)]
    assert candidate_splits(1, [None, 20]) == [(1, 1)]


# ---------------------------------------------------------------------------- probes (fake servers)


@contextmanager
def _listener(handle):
    """A TCP server on a free loopback port; handle(conn) runs for each connection."""
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    stop = threading.Event()

    def loop():
        srv.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                handle(conn)

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    try:
        yield Endpoint("127.0.0.1", srv.getsockname()[1])
    finally:
        stop.set()
        t.join(5)
        srv.close()


def _hello_reply(major: int, minor: int):
    def handle(conn):
        conn.recv(1 + 8 + 24)
        conn.sendall(struct.pack("<Q", 28) + bytes([major, minor, 0, 0]) + bytes(24))
        time.sleep(0.05)

    return handle


def test_probe_a_closed_port_is_a_typed_error_at_once():
    where = Endpoint("127.0.0.1", free_port())
    t0 = time.monotonic()
    with pytest.raises(EndpointError, match=r"127\.0\.0\.1:\d+: cannot connect") as e:
        probe(where, timeout=2)
    assert time.monotonic() - t0 < 2
    assert e.value.endpoint == str(where)


def test_probe_an_http_server_is_a_typed_error():
    httpd = http.server.HTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    try:
        t0 = time.monotonic()
        with pytest.raises(EndpointError, match="RPC"):
            probe(Endpoint("127.0.0.1", httpd.server_address[1]), timeout=3)
        assert time.monotonic() - t0 < 3.5
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_probe_a_silent_server_times_out():
    with _listener(lambda conn: time.sleep(1.5)) as where:
        t0 = time.monotonic()
        with pytest.raises(EndpointError, match="no RPC hello within 0.5 s"):
            probe(where, timeout=0.5)
        assert time.monotonic() - t0 < 1.5


def test_probe_an_unroutable_host_is_a_typed_error_within_the_timeout():
    t0 = time.monotonic()
    with pytest.raises(EndpointError, match="10.255.255.1:50052"):
        probe(Endpoint("10.255.255.1", 50052), timeout=1)  # no answer, or no route: typed either way
    assert time.monotonic() - t0 < 2


def test_probe_checks_the_protocol_version():
    with _listener(_hello_reply(7, 0)) as where:
        assert probe(where, timeout=2) == (7, 0, 0)
    with _listener(_hello_reply(6, 1)) as where:
        with pytest.raises(EndpointError, match="protocol 6.1.0, this client speaks 7.0"):
            probe(where, timeout=2)
    with _listener(_hello_reply(7, 9)) as where:
        with pytest.raises(EndpointError, match="protocol 7.9.0"):
            probe(where, timeout=2)


def test_cli_bad_endpoints_exit_2_with_one_line(tiny_models):
    from edge_specens.cli import main

    for ref, why in ((f"{tiny_models['small']}@127.0.0.1:", "no port"), (f"{tiny_models['small']}@[::1]:5", "IPv4")):
        r = subprocess.run(
            [sys.executable, "-m", "edge_specens", "generate", "-m", ref, "hi", "-n", "2"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.returncode == 2, r.stderr
        assert r.stderr.count("\n") == 1 and why in r.stderr and "Traceback" not in r.stderr
    assert main  # imported: the CLI module loads


# ---------------------------------------------------------------------------- a real RPC server

EOG = 2  # the tiny models' end-of-generation token (gguf_factory): biased away where a test needs a long reply

# `make install` builds llama-cpp-python with RPC, so CI (CI=true) runs these; elsewhere they skip
rpc = pytest.mark.skipif(
    not __import__("edge_specens.remote.backend", fromlist=["x"]).supports_rpc() and not os.environ.get("CI"),
    reason="llama-cpp-python built without RPC (make install builds it with RPC)",
)


class RpcServer:
    """`edge-specens rpc-server` on a loopback port, in a subprocess; restartable on the same port."""

    def __init__(self, port: int | None = None):
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> RpcServer:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edge_specens", "rpc-server", "--port", str(self.port), "-t", "1", "--no-cache"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # killing it must not touch the test process
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                probe(parse_endpoint(self.endpoint), timeout=2)
                return self
            except EndpointError:
                assert self.proc.poll() is None, self.proc.stderr.read() if self.proc.stderr else ""
                assert time.monotonic() < deadline, "rpc-server did not start"
                time.sleep(0.2)

    def kill(self) -> None:
        """SIGKILL the whole server (parent and child), as a crash or a pulled cable would."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(timeout=20)


@pytest.fixture
def rpc_server():
    server = RpcServer().start()
    yield server
    server.kill()


@rpc
def test_rpc_server_stops_cleanly_on_ctrl_c():
    server = RpcServer().start()
    assert server.stop() == 0
    assert "stopped" in server.proc.stderr.read()
    with pytest.raises(EndpointError):
        probe(parse_endpoint(server.endpoint), timeout=1)


@rpc
def test_rpc_server_refuses_a_busy_port_and_warns_off_loopback():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        r = subprocess.run(
            [sys.executable, "-m", "edge_specens", "rpc-server", "--port", str(s.getsockname()[1])],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert r.returncode == 2 and "cannot listen" in r.stderr and "Traceback" not in r.stderr
    server = subprocess.Popen(
        [sys.executable, "-m", "edge_specens", "rpc-server", "--host", "0.0.0.0", "--port", str(free_port())],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lines = [server.stderr.readline() for _ in range(5)]
        assert "no authentication" in "".join(lines) and "ssh -N -L" in "".join(lines)
    finally:
        server.send_signal(signal.SIGINT)
        assert server.wait(timeout=20) == 0


@rpc
def test_remote_rows_equal_local_rows(tiny_models, rpc_server):
    from edge_specens.member import Member, MemberOptions
    from edge_specens.remote.member import RemoteMember

    local = Member(tiny_models["big"], MemberOptions(n_ctx=256, kv_f32=True))
    remote = RemoteMember(tiny_models["big"], MemberOptions(n_ctx=256, kv_f32=True, rpc=rpc_server.endpoint))
    try:
        assert remote.device == f"rpc:{rpc_server.endpoint}" and remote.n_params == local.n_params
        prompt = local.tokenize("hello world print value")
        assert remote.tokenize("hello world print value") == prompt
        for m in (local, remote):
            m.prefill(prompt)
        want = [0, 2, 3]
        a = local.evaluate([prompt[-1], 5, 6, 7], want)
        b = remote.evaluate([prompt[-1], 5, 6, 7], want)
        np.testing.assert_allclose(b, a, atol=1e-4, rtol=1e-4)
        remote.truncate(len(prompt) - 1)
        local.truncate(len(prompt) - 1)
        rows_b = remote.evaluate_rows([prompt[-1]] + list(range(10, 30)), list(range(21)))  # > one shared buffer
        rows_a = local.evaluate_rows([prompt[-1]] + list(range(10, 30)), list(range(21)))
        np.testing.assert_allclose(np.stack(rows_b), np.stack(rows_a), atol=1e-4, rtol=1e-4)
        assert remote.tokens == local.tokens
    finally:
        local.close()
        remote.close()


@rpc
def test_ensemble_with_a_remote_member_gives_the_all_local_tokens(tiny_models, rpc_server):
    from noise_rule import check

    from edge_specens import Ensemble

    paths = [tiny_models["small"], tiny_models["big"]]
    with Ensemble.from_paths(paths, n_ctx=512, kv_f32=True) as here:
        with Ensemble.from_paths(paths, n_ctx=512, kv_f32=True, rpc=[None, rpc_server.endpoint]) as there:
            assert [m.device for m in there.members] == ["cpu", f"rpc:{rpc_server.endpoint}"]
            for strategy in ("standard", "se", "auto"):
                for prompt in ("hello world", "def f"):
                    a = here.generate(prompt, max_tokens=24, temperature=0, strategy="standard")
                    b = there.generate(prompt, max_tokens=24, temperature=0, strategy=strategy)
                    check(here, here.tokenize(prompt), a.tokens, b.tokens)
            side = there.generate("hello world", max_tokens=24, temperature=0, strategy="standard", parallel=True)
            assert side.stats.parallel and side.stats.member_devices[1].startswith("rpc:")
            ref = here.generate("hello world", max_tokens=24, temperature=0, strategy="standard")
            check(here, here.tokenize("hello world"), ref.tokens, side.tokens)


@rpc
def test_a_killed_server_is_member_lost_and_a_restarted_one_serves_again(tiny_models):
    from edge_specens import Ensemble

    server = RpcServer().start()
    paths = [tiny_models["small"], tiny_models["big"]]
    try:
        with Ensemble.from_paths(paths, n_ctx=512, kv_f32=True, rpc=[None, server.endpoint]) as ens:
            before = ens.generate("def f", max_tokens=30, temperature=0, strategy="standard")
            pieces = []
            with pytest.raises(MemberLostError) as lost:  # no end-of-generation token: it would run 400 tokens
                for i, piece in enumerate(
                    ens.stream("def f", max_tokens=400, temperature=0, strategy="standard", logit_bias={EOG: -100})
                ):
                    pieces.append(piece)
                    if i == 5:
                        server.kill()
            e = lost.value
            assert e.endpoint == server.endpoint and server.endpoint in str(e)
            assert e.result is not None and e.result.finish_reason == "error"
            assert e.result.text == "".join(pieces) and len(e.result.tokens) >= 6
            assert "member lost" in e.result.stats.note
            assert ens.members[1].lost
            with pytest.raises(MemberLostError, match="cannot reconnect"):  # still down: typed, quick
                ens.generate("hello world", max_tokens=4, temperature=0)
            server.start()  # same port
            again = ens.generate("def f", max_tokens=30, temperature=0, strategy="standard")
            assert again.tokens == before.tokens and ens.members[1].lost is None
    finally:
        server.kill()


@rpc
def test_cli_a_killed_server_exits_1_with_one_line(tiny_models):
    server = RpcServer().start()
    try:
        proc = subprocess.Popen(
            [
                sys.executable, "-m", "edge_specens", "generate", "-m", str(tiny_models["small"]),
                "-m", f"{tiny_models['big']}@{server.endpoint}", "def f", "-n", "480", "-c", "512",
                "--temp", "0", "--strategy", "standard",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )  # fmt: skip
        assert proc.stdout is not None and proc.stdout.read(8)  # generating
        server.kill()
        out, err = proc.communicate(timeout=120)
        err_text = err.decode()
        assert proc.returncode == 1, err_text
        lines = [ln for ln in err_text.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("error:") and "lost" in lines[0] and server.endpoint in lines[0]
        assert "Traceback" not in err_text and "core dumped" not in err_text
    finally:
        server.kill()


@rpc
def test_serve_answers_a_lost_member_with_503_and_keeps_serving(tiny_models):
    import httpx
    from serving import start_serve

    server = RpcServer().start()
    proc, url, _ = start_serve(
        ["-m", str(tiny_models["small"]), "-m", f"{tiny_models['big']}@{server.endpoint}", "-c", "512"]
    )
    try:
        health = httpx.get(f"{url}/health").json()
        assert [m["status"] for m in health["members"]] == ["ok", "ok"]
        body = {"prompt": "hello world", "max_tokens": 8, "temperature": 0}
        ok = httpx.post(f"{url}/v1/completions", json=body, timeout=60)
        assert ok.status_code == 200
        done = threading.Event()

        def kill_soon():
            time.sleep(0.5)
            server.kill()
            done.set()

        threading.Thread(target=kill_soon, daemon=True).start()
        long = {**body, "max_tokens": 480, "logit_bias": {str(EOG): -100}}
        r = httpx.post(f"{url}/v1/completions", json=long, timeout=120)
        done.wait(10)
        assert r.status_code == 503 and r.json()["error"]["code"] == "member_lost", r.text
        health = httpx.get(f"{url}/health").json()
        assert health["status"] == "degraded" and health["members"][1]["status"] == "lost"
        assert proc.poll() is None  # still serving
        server.start()
        again = httpx.post(f"{url}/v1/completions", json=body, timeout=60)
        assert again.status_code == 200 and again.json()["choices"][0]["text"] == ok.json()["choices"][0]["text"]
        assert httpx.get(f"{url}/health").json()["status"] == "ok"
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
        server.kill()


def test_presets_place_members(tiny_models, tmp_path):
    from edge_specens import Ensemble
    from edge_specens.errors import PresetError
    from edge_specens.presets import load_preset

    port = free_port()  # nothing listens there
    toml = tmp_path / "mine.toml"
    toml.write_text(
        f'name = "mine"\ndescription = "x"\nmethod = "we"\n'
        f'[[members]]\npath = "{tiny_models["small"]}"\n'
        f'[[members]]\npath = "{tiny_models["big"]}"\nrpc = "127.0.0.1:{port}"\n'
    )
    preset = load_preset(toml)
    assert [m.rpc for m in preset.members] == [None, f"127.0.0.1:{port}"]
    with pytest.raises(EndpointError, match=f"127.0.0.1:{port}: cannot connect"):
        Ensemble.from_preset(str(toml), progress=False)
    toml.write_text(toml.read_text().replace(f"127.0.0.1:{port}", "127.0.0.1:"))
    with pytest.raises(PresetError, match=r"members\[1\]\.rpc.*no port"):
        load_preset(toml)


@rpc
def test_ctrl_c_while_waiting_for_the_server_leaves_the_member_consistent(tiny_models, rpc_server):
    from edge_specens.member import Member, MemberOptions
    from edge_specens.remote.member import RemoteMember

    local = Member(tiny_models["big"], MemberOptions(n_ctx=256, kv_f32=True))
    remote = RemoteMember(tiny_models["big"], MemberOptions(n_ctx=256, kv_f32=True, rpc=rpc_server.endpoint))
    try:
        prompt = local.tokenize("hello world print value")
        for m in (local, remote):
            m.prefill(prompt)
        conn = remote._conn
        real_poll = conn.poll

        def interrupted(timeout=0.0):
            conn.poll = real_poll
            raise KeyboardInterrupt

        conn.poll = interrupted  # the user presses Ctrl-C while the helper decodes
        with pytest.raises(KeyboardInterrupt):
            remote.evaluate([prompt[-1], 5, 6], [2])
        assert remote.tokens == prompt[:-1]  # not recorded: the answer was never read
        a = local.evaluate([prompt[-1], 9], [0, 1])
        b = remote.evaluate([prompt[-1], 9], [0, 1])  # reads the stale answer, rolls the helper back
        np.testing.assert_allclose(b, a, atol=1e-4, rtol=1e-4)
        assert remote.tokens == local.tokens
    finally:
        local.close()
        remote.close()


# ---------------------------------------------------------------------------- dying with the parent, silent servers


def _processes(*needles: str) -> list[int]:
    """Live processes (not zombies) whose command line holds every needle."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmdline = open(f"/proc/{pid}/cmdline", "rb").read().decode(errors="replace")
            state = open(f"/proc/{pid}/stat").read().rpartition(")")[2].split()[0]
        except OSError:
            continue
        if state != "Z" and all(n in cmdline for n in needles):
            found.append(int(pid))
    return found


def _alive(pid: int) -> bool:
    try:
        return open(f"/proc/{pid}/stat").read().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def _until(condition, seconds: float) -> float:
    """Seconds until condition() held; fails after `seconds`."""
    t0 = time.monotonic()
    while not condition():
        assert time.monotonic() - t0 < seconds, f"not within {seconds} s"
        time.sleep(0.05)
    return time.monotonic() - t0


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as rpc-server's own check does
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")

_ORPHAN = """
import os, sys, time
from edge_specens.remote import lifeline
mode = sys.argv[1]
if mode == "parent":  # start a child through a lifeline, say its pid, wait to be killed
    line = lifeline.Lifeline()
    child = lifeline.spawn([sys.executable, "-c", sys.argv[2], "child", sys.argv[3], *line.argv()], line)
    print(child.pid, flush=True)
    time.sleep(120)
else:
    fd, parent = int(sys.argv[3]), int(sys.argv[4])
    if sys.argv[2] == "lifeline-only":
        lifeline._set_pdeathsig = lambda: None
    elif sys.argv[2] == "pdeathsig-only":
        fd, _keep = os.pipe()  # a line that never breaks: only the kernel's signal can end us
    lifeline.die_with_parent(fd, parent)
    time.sleep(120)
"""


@linux
@pytest.mark.parametrize("mode", ["lifeline-only", "pdeathsig-only", "both"])
def test_a_child_dies_with_its_parent_on_kill_9(mode):
    parent = subprocess.Popen(
        [sys.executable, "-c", _ORPHAN, "parent", _ORPHAN, mode], stdout=subprocess.PIPE, text=True
    )
    child = 0
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        time.sleep(0.5)  # the child is past die_with_parent
        assert _alive(child)
        parent.kill()
        parent.wait()
        _until(lambda: not _alive(child), 5)
    finally:
        parent.kill()
        if child and _alive(child):  # the test failed: leave no orphan behind
            os.kill(child, signal.SIGKILL)


def test_a_child_whose_parent_is_already_gone_exits_at_once():
    from edge_specens.remote.lifeline import ORPHAN_EXIT

    code = "import os; from edge_specens.remote.lifeline import die_with_parent as d; r, w = os.pipe(); d(r, 1)"
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-c", code + "; import time; time.sleep(60)"], timeout=30)
    assert r.returncode == ORPHAN_EXIT and time.monotonic() - t0 < 10


@rpc
@linux
def test_kill_9_of_rpc_server_frees_its_port_and_a_restart_serves():
    server = RpcServer().start()
    try:
        assert server.proc is not None
        children = _processes("edge_specens.remote.server", f":{server.port}")
        assert len(children) == 1 and not _bindable(server.port)
        os.kill(server.proc.pid, signal.SIGKILL)  # the parent only: its child must follow
        server.proc.wait()
        _until(lambda: _bindable(server.port), 5)
        assert not any(_alive(pid) for pid in children)
        server.start()  # same port
        assert probe(parse_endpoint(server.endpoint), timeout=2) == (7, 0, 0)
    finally:
        server.kill()
        for pid in _processes("edge_specens.remote.server", f":{server.port}"):  # only if the test failed
            os.kill(pid, signal.SIGKILL)


def test_silence_bounds_follow_the_cost(monkeypatch):
    from edge_specens.remote import deadlines as d

    monkeypatch.delenv(d.STALL_ENV, raising=False)
    assert d.stall_s() == d.DEFAULT_STALL_S == 30
    assert d.call_silence_s(1, 0.05) == 30  # a usual decode: the floor
    assert d.call_silence_s(512, 20.0) == 10 * 20 + 5  # a long prefill on a slow server: its cost
    assert d.call_silence_s(1, None) == 30 and d.call_silence_s(512, None) == 0.5 * 512 + 5  # uncalibrated
    assert d.load_silence_s(10**9, can_count=True) == 30  # silence since the last byte
    assert d.load_silence_s(10**9, can_count=False) == 30 + 1000  # no byte count: the whole load
    monkeypatch.setenv(d.STALL_ENV, "2.5")
    assert d.stall_s() == 2.5 and d.call_silence_s(1, 0.01) == 5.1
    for bad in ("0", "-1", "soon", "inf", "nan"):
        monkeypatch.setenv(d.STALL_ENV, bad)
        with pytest.raises(InvalidParameterError, match=d.STALL_ENV):
            d.stall_s()


@linux
def test_the_network_watch_counts_bytes_and_keeps_connections_alive():
    from edge_specens.remote.helper import NetworkWatch

    pulse = np.zeros(2, dtype=np.int64)
    with _listener(lambda conn: conn.recv(1 << 20) and time.sleep(1)) as where:
        watch = NetworkWatch(str(where), pulse)
        watch.look()
        assert pulse.tolist() == [0, 0]  # nothing connected yet
        with socket.create_connection((where.host, where.port)) as s:
            watch.look()
            assert pulse[1] == 1 and s.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
            before = int(pulse[0])
            s.sendall(b"x" * 100_000)
            time.sleep(0.2)
            watch.look()
            assert int(pulse[0]) - before >= 100_000
            watch.look()
            assert int(pulse[0]) - before < 100_100  # counted once


@pytest.fixture
def short_stall(monkeypatch):
    from edge_specens.remote.deadlines import STALL_ENV

    monkeypatch.setenv(STALL_ENV, "2")


@rpc
@linux
def test_a_server_silent_after_the_hello_is_member_lost_within_the_bound(tiny_models, short_stall):
    from rpc_fakes import HelloThenSilent

    from edge_specens.member import MemberOptions
    from edge_specens.remote.member import RemoteMember

    with HelloThenSilent() as fake:
        t0 = time.monotonic()
        with pytest.raises(MemberLostError, match="went silent: no progress loading the model for 2 s") as e:
            RemoteMember(tiny_models["big"], MemberOptions(n_ctx=256, rpc=fake.endpoint))
        assert time.monotonic() - t0 < 12  # the helper starts (~1-3 s), then 2 s of silence
        assert e.value.endpoint == fake.endpoint and fake.endpoint in str(e.value)
        assert fake.connections == 2  # the probe's hello, then the helper's: it got past the hello
        assert not _processes("edge_specens.remote.helper", f"@{fake.endpoint}")


def _generate(models: list[str], *extra: str, stall_s: str = "600") -> subprocess.Popen:
    args = [sys.executable, "-m", "edge_specens", "generate", "-c", "512", "--temp", "0", "--strategy", "standard"]
    for m in models:
        args += ["-m", m]
    return subprocess.Popen(
        [*args, *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "EDGE_SPECENS_RPC_STALL_S": stall_s},
    )


@rpc
@linux
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_a_load_stuck_on_a_silent_server_ends_on_a_signal_and_leaves_no_helper(tiny_models, sig):
    from rpc_fakes import HelloThenSilent

    with HelloThenSilent() as fake:
        proc = _generate([str(tiny_models["small"]), f"{tiny_models['big']}@{fake.endpoint}"], "hi", "-n", "4")
        try:
            helper = f"@{fake.endpoint}"
            _until(lambda: _processes("edge_specens.remote.helper", helper), 30)
            time.sleep(1.0)  # stuck in the load (the bound is 600 s)
            assert proc.poll() is None
            t0 = time.monotonic()
            proc.send_signal(sig)
            rc = proc.wait(timeout=30)
            assert time.monotonic() - t0 < 3
            assert rc == {signal.SIGINT: 130, signal.SIGTERM: -signal.SIGTERM, signal.SIGKILL: -signal.SIGKILL}[sig]
            _until(lambda: not _processes("edge_specens.remote.helper", helper), 3)
            if sig == signal.SIGINT:
                assert "Traceback" not in proc.stderr.read().decode()  # type: ignore[union-attr]
        finally:
            proc.kill()
            proc.wait()
            for pid in _processes("edge_specens.remote.helper", f"@{fake.endpoint}"):  # only if the test failed
                os.kill(pid, signal.SIGKILL)


@rpc
def test_a_stall_mid_generation_is_member_lost_within_the_bound(tiny_models, rpc_server, short_stall):
    from rpc_fakes import StallingProxy

    from edge_specens import Ensemble
    from edge_specens.remote.deadlines import NETWORK_ALLOWANCE_S

    paths = [tiny_models["small"], tiny_models["big"]]
    with StallingProxy(rpc_server.port) as proxy:
        with Ensemble.from_paths(paths, n_ctx=512, kv_f32=True, rpc=[None, proxy.endpoint]) as ens:
            t0 = 0.0
            with pytest.raises(MemberLostError, match="went silent: no answer to a decode") as lost:
                for i, _ in enumerate(
                    ens.stream("def f", max_tokens=400, temperature=0, strategy="standard", logit_bias={EOG: -100})
                ):
                    if i == 5:
                        proxy.stall()
                        t0 = time.monotonic()
            waited = time.monotonic() - t0
            bound = 2 + NETWORK_ALLOWANCE_S  # max(floor 2, 10 x a tiny decode + allowance) < 7 s
            assert waited < bound + 2, waited
            assert lost.value.endpoint == proxy.endpoint and len(lost.value.result.tokens) >= 6
            t1 = time.monotonic()
            ens.close()  # the stalled helper was killed: nothing to wait for
            assert time.monotonic() - t1 < 2


@rpc
@linux
def test_ctrl_c_during_a_stalled_decode_exits_130_at_once(tiny_models, rpc_server):
    from rpc_fakes import StallingProxy

    with StallingProxy(rpc_server.port) as proxy:
        proc = _generate(
            [str(tiny_models["small"]), f"{tiny_models['big']}@{proxy.endpoint}"],
            "def f", "-n", "480", "--logit-bias", f"{EOG}=-100",
        )  # fmt: skip
        try:
            assert proc.stdout is not None and proc.stdout.read(8)  # generating
            proxy.stall()
            time.sleep(1.0)
            assert proc.poll() is None  # waiting on the stalled server (the bound is 600 s)
            t0 = time.monotonic()
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=30) == 130
            assert time.monotonic() - t0 < 3  # was 10.1 s: close() waited for the busy helper
            _until(lambda: not _processes("edge_specens.remote.helper", f"@{proxy.endpoint}"), 3)
        finally:
            proc.kill()
            proc.wait()
