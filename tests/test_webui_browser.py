"""The chat page in a real browser: headless Chromium (Debian's `chromium`, driven by Playwright for
Python through `executable_path`; nothing is downloaded) against a real `edge-specens serve` on the
tiny test models.

What a person does, checked from the outside: load the page, send a message and see the reply
stream in, stop one mid-way, regenerate and edit-and-resend, keep two conversations across a
reload (rename, export, delete, import), colour a reply by provenance, give an API key once, chat
with a plain OpenAI-compatible server that knows nothing of ensembles, and read a reply whose text
is an XSS payload without anything executing. Screenshots (light and dark, narrow and wide) go to a
folder under pytest's tmp dir (printed). The tiny models write random text: where a test needs
particular text (the payload, the screenshots' Markdown) a regex constraint makes the model write it.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import threading
import time
from contextlib import contextmanager

import httpx
import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:  # pragma: no cover - the dev extra installs it
    sync_playwright = None
if CHROMIUM is None or sync_playwright is None:
    pytest.skip(
        "browser tests need Debian's chromium and Playwright for Python (make install-dev installs both where it can)",
        allow_module_level=True,
    )
uvicorn = pytest.importorskip("uvicorn")
pytest.importorskip("fastapi")

from fastapi import FastAPI, Request  # noqa: E402  (module level: FastAPI resolves the annotations here)
from fastapi.responses import Response, StreamingResponse  # noqa: E402
from gguf_factory import EOS_ID, SIMPLE_CHAT_TEMPLATE, write_tiny_llama  # noqa: E402
from serving import CHROMIUM_ARGS, start_serve, wait_healthy  # noqa: E402

from edge_specens.server.webui import webui_files  # noqa: E402

pytestmark = pytest.mark.slow

ARGS = CHROMIUM_ARGS
N_CTX = 4096  # long enough that a reply can be stopped mid-way
NO_EOS = json.dumps({"logit_bias": {str(EOS_ID): -100}})
PAYLOAD = (
    '<script>window.__pwned=1</script><img src=x onerror="window.__pwned=2"> '
    '[link](javascript:window.__pwned=3) <b onmouseover="window.__pwned=4">bold</b> <svg onload=window.__pwned=5>'
)
MARKDOWN_REPLY = (
    "Here is one:\n\n```python\ndef add(a, b):\n    return a + b\n```\n\nCall it as `add(2, 3)`; it returns **5**."
)


def regex_literal(text: str) -> str:
    """`text` as a regex that matches exactly it (llguidance reads Rust's syntax, which refuses
    escapes of characters that are not special, as Python's re.escape writes them)."""
    return "".join("\\" + c if c in "\\.+*?()|[]{}^$#&-~" else c for c in text)


# ---------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("webui_models")
    return [
        write_tiny_llama(d / "small.gguf", seed=1, n_embd=32, n_ctx_train=N_CTX, chat_template=SIMPLE_CHAT_TEMPLATE),
        write_tiny_llama(
            d / "big.gguf", seed=2, n_embd=64, n_layer=3, n_ctx_train=N_CTX, chat_template=SIMPLE_CHAT_TEMPLATE
        ),
    ]


@contextmanager
def serving(args: list[str]):
    proc, url, _ = start_serve(args)
    try:
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:  # pragma: no cover
            proc.kill()
            proc.wait()
        proc.stderr.close()


@pytest.fixture(scope="module")
def server(models):
    with serving(["-m", str(models[0]), "-m", str(models[1]), "-c", str(N_CTX), "-t", "1"]) as url:
        yield url


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    with sync_playwright() as pw:
        ctx = pw.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium_profile")),  # a fresh profile
            executable_path=CHROMIUM,
            headless=True,
            args=ARGS,
            viewport={"width": 1280, "height": 800},
            accept_downloads=True,
        )
        try:
            yield ctx
        finally:
            ctx.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    d = tmp_path_factory.mktemp("webui_screenshots")
    yield d
    print(f"\nchat page screenshots: {d}")


class Page:
    """One tab on the page with empty storage; records script errors and CSP violations."""

    def __init__(self, ctx, url: str):
        self.url = url
        self.p = ctx.new_page()
        self.problems: list[str] = []
        self.p.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))
        self.p.on("console", lambda m: self.problems.append(f"console: {m.text}") if m.type == "error" else None)
        self.p.on("dialog", lambda d: d.accept())  # confirm() of Delete
        self.p.goto(url)
        self.p.evaluate("localStorage.clear()")
        self.load()

    def load(self):
        self.p.reload()
        self.p.wait_for_selector("body[data-ready='1']")

    def settings(self, **fields):
        self.p.click("#open-settings")
        for name, value in fields.items():
            sel = f"#s-{name}"
            if isinstance(value, bool):
                self.p.set_checked(sel, value)
            elif name in ("strategy", "theme"):
                self.p.select_option(sel, value)
            else:
                self.p.fill(sel, str(value))
        self.p.click("#settings-save")
        assert not self.p.is_visible("#settings"), self.p.inner_text("#settings-error")

    def send(self, text: str, wait: bool = True):
        n = self.replies()
        self.p.fill("#input", text)
        self.p.press("#input", "Enter")
        if wait:
            self.wait_reply(n + 1)

    def replies(self) -> int:
        return self.p.locator("#messages .msg.assistant").count()

    def wait_reply(self, n: int | None = None):
        """Until no reply streams (and there are n replies)."""
        n = self.replies() if n is None else n
        self.p.wait_for_function(
            "n => document.body.dataset.state === 'idle'"
            " && document.querySelectorAll('#messages .msg.assistant').length === n",
            arg=n,
        )

    def stored(self) -> dict:
        return self.p.evaluate("JSON.parse(localStorage.getItem('edge-specens.conversations.v1'))")

    def current(self) -> dict:
        s = self.stored()
        return next(c for c in s["convs"] if c["id"] == s["current"])

    def close(self):
        self.p.close()
        assert not self.problems, self.problems


@pytest.fixture
def page(browser, server):
    pg = Page(browser, server)
    yield pg
    pg.close()


def health(url: str) -> dict:
    return httpx.get(f"{url}/health", timeout=5).json()


# ---------------------------------------------------------------------- the tests
def test_a_reply_streams_in_and_can_be_stopped(page, server):
    p = page.p
    assert p.evaluate("document.activeElement.id") == "input"  # type at once
    assert p.inner_text("#model-name") == "small.gguf+big.gguf"
    chips = p.locator("#members li").all_inner_texts()
    assert len(chips) == 2 and all("CPU" in c and "params" in c and "w 0.5" in c for c in chips), chips
    # Shift+Enter breaks the line, Enter sends
    p.fill("#input", "one")
    p.press("#input", "Shift+Enter")
    p.type("#input", "two")
    assert p.input_value("#input") == "one\ntwo" and page.replies() == 0
    # a long reply (no end-of-generation token), watched as it grows, stopped mid-way
    page.settings(max_tokens=N_CTX - 200, extra=NO_EOS)
    p.evaluate(
        """() => { window.__lengths = [];
        new MutationObserver(() => { const b = document.querySelector('#messages .msg.assistant .body');
          if (b) window.__lengths.push(b.textContent.length); })
        .observe(document.getElementById('messages'), {subtree: true, childList: true, characterData: true}); }"""
    )
    p.press("#input", "Enter")
    assert p.is_visible("#stop") and not p.is_visible("#send")
    p.wait_for_function("() => new Set(window.__lengths.filter(n => n > 0)).size >= 3")  # it streams in
    p.click("#stop")
    page.wait_reply(1)
    assert p.is_visible("#send") and not p.is_visible("#stop")
    stats = p.inner_text("#messages .msg.assistant .stats")
    assert "stopped" in stats, stats
    reply = page.current()["messages"][-1]
    assert reply["stopped"] and reply["content"]
    # the server cancelled the generation: it is idle again long before N_CTX tokens
    deadline = time.monotonic() + 10
    while health(server)["busy"]:
        assert time.monotonic() < deadline, "the server kept generating after Stop"
        time.sleep(0.1)
    assert health(server)["cancelled"] >= 1


def test_conversations_survive_a_reload_with_regenerate_edit_rename_export_import(page, tmp_path):
    p = page.p
    page.settings(max_tokens=8)
    page.send("first question")
    first = page.current()["messages"][-1]["content"]
    p.click("[data-action=regenerate]")
    page.wait_reply(1)
    assert [m["role"] for m in page.current()["messages"]] == ["user", "assistant"]
    p.click("[data-action=edit]")
    p.fill(".edit-box", "first question, edited")
    p.click("[data-action=resend]")
    page.wait_reply(1)
    msgs = page.current()["messages"]
    assert [m["content"] for m in msgs][:1] == ["first question, edited"] and len(msgs) == 2
    edited_reply = msgs[1]["content"]
    assert first and edited_reply
    p.click("#new-chat")
    page.send("second question")
    titles = p.locator("#conversations .open-conv").all_inner_texts()
    assert titles == ["second question", "first question"], titles  # titled by the first message sent

    page.load()
    assert p.locator("#conversations .open-conv").all_inner_texts() == titles
    assert "second question" in p.inner_text("#messages")
    p.click("#conversations li:nth-child(2) .open-conv")
    assert p.locator("#messages .msg.user .body").all_inner_texts() == ["first question, edited"]
    assert page.current()["messages"][1]["content"] == edited_reply
    p.check("#provenance-toggle")  # the raw text (Markdown would reshape the tiny model's punctuation)
    assert p.text_content("#messages .msg.assistant .prov") == edited_reply
    p.uncheck("#provenance-toggle")

    p.click("#conversations li:nth-child(2) [data-action=rename]")
    p.fill("#rename-input", "renamed <b>chat</b>")
    p.press("#rename-input", "Enter")
    page.load()
    assert p.locator("#conversations .open-conv").all_inner_texts() == ["second question", "renamed <b>chat</b>"]

    with p.expect_download() as dl:
        p.click("#export")
    exported = tmp_path / "chats.json"
    dl.value.save_as(exported)
    data = json.loads(exported.read_text())
    assert data["format"] == "edge-specens-chats" and len(data["conversations"]) == 2

    for _ in range(2):
        p.click("#conversations li:first-child [data-action=delete]")
    assert p.locator("#conversations .open-conv").all_inner_texts() == ["New chat"]
    p.set_input_files("#import-file", str(exported))  # read asynchronously: expect waits for it
    expect(p.locator("#conversations .open-conv")).to_have_text(["second question", "renamed <b>chat</b>", "New chat"])
    page.load()
    assert len(page.stored()["convs"]) == 3


def test_provenance_colours_each_token_with_a_legend(page, shots):
    p = page.p
    page.settings(max_tokens=60, temperature=0, strategy="se", logprobs=True)
    p.check("#provenance-toggle")
    legend = p.inner_text("#legend")
    for words in ("small.gguf's draft", "big.gguf's draft", "prompt lookup", "resampled", "drawn from r"):
        assert words in legend, legend
    page.send("hello world")
    spans = p.locator("#messages .msg.assistant .prov span")
    assert spans.count() > 0
    classes = set(spans.evaluate_all("els => els.map(e => e.className)"))
    assert classes <= {"p-m0", "p-m1", "p-lookup", "p-resampled", "p-sampled"}, classes
    assert classes & {"p-m0", "p-m1", "p-resampled"}, classes  # se: members' drafts were judged
    reply = page.current()["messages"][-1]
    assert "".join(spans.all_text_contents()) == reply["content"]  # every character, in its span
    titles = spans.evaluate_all("els => els.map(e => e.title)")
    assert any("draft, accepted" in t or "resampled" in t for t in titles), titles[:5]
    assert all(re.search(r" · p\(r\) = [01]\.\d{3}$", t) for t in titles), titles[:5]  # logprobs asked for
    spans.first.hover()
    stats = p.inner_text("#messages .msg.assistant .stats")
    assert "tokens" in stats and "tok/s" in stats and "se [" in stats and "% of proposals accepted" in stats, stats
    p.screenshot(path=str(shots / "provenance.png"))
    p.uncheck("#provenance-toggle")  # back to Markdown
    assert p.locator("#messages .prov").count() == 0 and not p.is_visible("#legend")


def test_an_xss_payload_in_a_reply_renders_as_text(page):
    p = page.p
    page.settings(max_tokens=600, temperature=0, extra=json.dumps({"regex": regex_literal(PAYLOAD)}))
    page.send(PAYLOAD)  # the user's message is the payload too
    reply = page.current()["messages"][-1]["content"]
    assert reply == PAYLOAD, reply
    for provenance in (False, True):
        p.set_checked("#provenance-toggle", provenance)
        box = p.locator("#messages")
        assert "<script>window.__pwned=1</script>" in box.inner_text()
        assert box.locator("script, img, svg, [onerror], [onmouseover], [onload]").count() == 0
        assert box.locator("a[href^='javascript']").count() == 0
        p.hover("#messages .msg.assistant .body")
        assert p.evaluate("window.__pwned") is None
    # and were markup ever to slip through, the CSP stops inline handlers and scripts
    p.evaluate(
        """() => document.body.insertAdjacentHTML('beforeend',
        '<img src="data:," onerror="window.__csp=1"><script>window.__csp=2</script>')"""
    )
    p.wait_for_timeout(300)
    assert p.evaluate("window.__csp") is None
    page.problems = [m for m in page.problems if "Content Security Policy" not in m]  # that refusal, on purpose


def test_screenshots_light_and_dark_narrow_and_wide(page, shots):
    p = page.p
    forced = json.dumps({"regex": regex_literal(MARKDOWN_REPLY)})
    page.settings(max_tokens=200, temperature=0, strategy="se", extra=forced)  # se: the members' drafts show
    page.send("Write a Python function that adds two numbers.")
    assert page.current()["messages"][-1]["content"] == MARKDOWN_REPLY
    body = p.locator("#messages .msg.assistant .body")
    assert body.locator("pre code.hljs").count() == 1 and body.locator("pre .copy").count() == 1
    assert body.locator("strong").inner_text() == "5" and body.locator("code").count() == 2
    p.click("#messages pre .copy")
    for scheme in ("light", "dark"):
        p.emulate_media(color_scheme=scheme)
        for name, size in (("wide", {"width": 1280, "height": 800}), ("narrow", {"width": 390, "height": 844})):
            p.set_viewport_size(size)
            p.wait_for_timeout(100)
            p.screenshot(path=str(shots / f"{scheme}-{name}.png"))
            if name == "narrow":  # the conversation list is one tap away, and fits the screen
                assert not p.locator("#sidebar").is_visible() or p.locator("#sidebar").bounding_box()["x"] < 0
                p.click("#open-sidebar")
                p.wait_for_timeout(250)
                assert p.locator("#sidebar").bounding_box()["x"] >= 0
                p.screenshot(path=str(shots / f"{scheme}-narrow-conversations.png"))
                p.click("#close-sidebar")
    p.check("#provenance-toggle")
    p.set_viewport_size({"width": 1280, "height": 800})
    p.screenshot(path=str(shots / "dark-wide-provenance.png"))
    p.emulate_media(color_scheme="light")
    p.screenshot(path=str(shots / "light-wide-provenance.png"))
    assert p.evaluate("document.documentElement.scrollWidth <= document.documentElement.clientWidth")


def test_the_api_key_is_asked_for_once(browser, models):
    with serving(["-m", str(models[0]), "-m", str(models[1]), "-c", "512", "-t", "1", "--api-key", "sesame"]) as url:
        p = browser.new_page()
        p.goto(url)
        p.evaluate("localStorage.clear()")
        p.reload()
        p.wait_for_selector("#key-dialog[open]")
        p.fill("#key-input", "wrong")
        p.press("#key-input", "Enter")
        p.wait_for_selector("#key-error:not([hidden])")
        assert "refused" in p.inner_text("#key-error")
        p.fill("#key-input", "sesame")
        p.press("#key-input", "Enter")
        p.wait_for_selector("body[data-ready='1']")
        assert p.locator("#members li").count() == 2
        p.fill("#input", "hi")
        p.press("#input", "Enter")
        p.wait_for_function(
            "() => document.querySelector('#messages .msg.assistant .stats')?.textContent.includes('tokens')"
        )
        p.reload()  # kept in this browser: not asked again
        p.wait_for_selector("body[data-ready='1']")
        assert not p.is_visible("#key-dialog")
        p.close()


# ---------------------------------------------------------------------- any OpenAI-compatible server
def _plain_openai_app(requests: list[dict]):
    """A server that knows nothing of ensembles: the page's files, /v1/models and a streamed chat."""
    files = webui_files()
    app = FastAPI()

    @app.get("/")
    async def index():
        return Response(files["index.html"].read_bytes(), media_type="text/html")

    @app.get("/webui/{rel:path}")
    async def asset(rel: str):
        if rel not in files:
            return Response(status_code=404)
        kind = "text/javascript" if rel.endswith(".js") else "text/css"
        return Response(files[rel].read_bytes(), media_type=kind)

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": "plain-model", "object": "model"}]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        requests.append(await request.json())

        def events():
            for piece in ["Hello", ", **world**", "!"]:
                chunk = {
                    "id": "x",
                    "object": "chat.completion.chunk",
                    "choices": [{"index": 0, "delta": {"content": piece}}],
                }
                yield f"data: {json.dumps(chunk)}\n\n"
                time.sleep(0.05)
            yield 'data: {"id":"x","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n'

        return StreamingResponse(events(), media_type="text/event-stream")

    @app.get("/health")
    async def health_():
        return {"status": "ok"}

    return app


def test_the_page_works_against_a_plain_openai_server(browser):
    requests: list[dict] = []
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    srv = uvicorn.Server(uvicorn.Config(_plain_openai_app(requests), log_level="warning"))
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        wait_healthy(url, 20)
        pg = Page(browser, url)
        p = pg.p
        assert p.inner_text("#model-name") == "plain-model" and p.locator("#members li").count() == 0
        pg.settings(temperature=0.5)
        pg.send("hi")
        body = p.locator("#messages .msg.assistant .body")
        assert not pg.current()["messages"][-1].get("error"), pg.current()["messages"][-1]
        assert body.inner_text().strip() == "Hello, world!" and body.locator("strong").inner_text() == "world"
        assert "3 tokens" in p.inner_text("#messages .msg.assistant .stats")
        sent = requests[-1]
        assert sent["model"] == "plain-model" and sent["temperature"] == 0.5 and sent["stream"] is True
        assert "provenance" not in sent and "strategy" not in sent  # no extras a strict server would refuse
        assert sent["messages"] == [{"role": "user", "content": "hi"}]
        p.check("#provenance-toggle")
        assert "does not say where tokens came from" in p.inner_text("#legend")
        assert "no provenance was recorded" in p.inner_text("#messages")
        # this server has no /webui/ensemble.json: the one 404 the page expects (and shrugs off)
        pg.problems = [m for m in pg.problems if "404" not in m]
        pg.close()
    finally:
        srv.should_exit = True
        thread.join(10)
        sock.close()
