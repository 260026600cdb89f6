"""A screenshot of the chat page with a real reply coloured by provenance, for the README.

Starts `edge-specens serve` on a preset (the duo by default), opens the page in Debian's headless
chromium through Playwright, asks one question at T = 0 with provenance and log-probabilities on, and
saves the picture:

    python scripts/webui_screenshot.py --out docs/images/webui-duo-provenance.png
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from serving import CHROMIUM_ARGS, start_serve  # noqa: E402

QUESTION = "Write a Python function that checks whether a string is a palindrome, ignoring case."


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-p", "--preset", default="qwen2.5-coder-duo")
    ap.add_argument("--out", type=Path, default=Path("docs/images/webui-duo-provenance.png"))
    ap.add_argument("--theme", default="dark", choices=["light", "dark"])
    ap.add_argument("--max-tokens", type=int, default=160)
    a = ap.parse_args()

    from playwright.sync_api import sync_playwright

    proc, url, _ = start_serve(["-p", a.preset], timeout=300)
    try:
        with sync_playwright() as pw, tempfile.TemporaryDirectory() as profile:
            ctx = pw.chromium.launch_persistent_context(
                profile,
                executable_path="/usr/bin/chromium",
                headless=True,
                args=CHROMIUM_ARGS,
                viewport={"width": 1280, "height": 900},
                color_scheme=a.theme,
            )
            p = ctx.new_page()
            p.goto(url + "/")
            p.wait_for_selector("body[data-ready='1']")
            p.click("#open-settings")
            p.fill("#s-max_tokens", str(a.max_tokens))
            p.fill("#s-temperature", "0")
            p.set_checked("#s-logprobs", True)
            p.click("#settings-save")
            p.check("#provenance-toggle")
            p.fill("#input", QUESTION)
            p.press("#input", "Enter")
            p.wait_for_function(
                "n => document.body.dataset.state === 'idle'"
                " && document.querySelectorAll('#messages .msg.assistant').length === n",
                arg=1,
                timeout=600_000,
            )
            stats = p.inner_text("#messages .msg.assistant .stats")
            a.out.parent.mkdir(parents=True, exist_ok=True)
            p.screenshot(path=str(a.out))
            ctx.close()
        print(f"{a.out}: {stats}")
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


if __name__ == "__main__":
    main()
