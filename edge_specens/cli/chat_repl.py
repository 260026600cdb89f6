"""The interactive `edge-specens chat` loop.

Each turn re-renders the whole history with the chat template; the members keep
their KV caches, so only the new turn is evaluated. Ctrl-C stops the current reply
(what was generated so far stays in the history); /stats, /reset and /exit are commands.
"""

from __future__ import annotations

from collections.abc import Callable

import click

from ..chat import chat_template
from ..errors import ContextOverflowError, EdgeSpecensError

HELP = "commands: /stats (speed of the last reply), /reset (clear history), /exit; Ctrl-C stops a reply"


def run_repl(
    ens,
    sampling_kw: dict,
    system: str | None = None,
    read: Callable[[str], str] = input,
    write: Callable[..., None] = click.echo,
) -> None:
    base = [{"role": "system", "content": system}] if system else []
    history = list(base)
    template = chat_template(ens)
    write(f"edge-specens chat with {ens.name} ({HELP})", err=True)
    while True:
        try:
            line = read(">>> ")
        except EOFError:
            write("")
            return
        except KeyboardInterrupt:  # at the prompt: leave, with status 130 like every other Ctrl-C
            write("")
            raise
        cmd = line.strip()
        if not cmd:
            continue
        if cmd in ("/exit", "/quit", "/bye"):
            return
        if cmd == "/reset":
            history = list(base)
            write("history cleared", err=True)
            continue
        if cmd == "/stats":
            res = ens.last_result
            write(res.summary() if res else "no reply yet", err=True)
            continue
        if cmd.startswith("/"):
            write(f"unknown command {cmd}; {HELP}", err=True)
            continue
        history.append({"role": "user", "content": line})
        try:
            prompt = _fit(template, history, base, ens.n_ctx, write)
        except ContextOverflowError as e:
            history.pop()
            write(f"error: {e}", err=True)
            continue
        reply = []
        try:
            for piece in ens.stream(prompt, **sampling_kw):
                write(piece, nl=False)
                reply.append(piece)
        except KeyboardInterrupt:
            write(" [stopped]", nl=False)
        except EdgeSpecensError as e:
            write(f"\nerror: {e}", err=True)
        write("")
        history.append({"role": "assistant", "content": "".join(reply)})


def _fit(template, history: list, base: list, n_ctx: int, write) -> list[int]:
    """Tokens of the history; drop the oldest turns (keeping the system message) until it fits."""
    while True:
        tokens = template.tokens(history)
        if len(tokens) < n_ctx - 16 or len(history) <= len(base) + 1:
            if len(tokens) >= n_ctx:
                raise ContextOverflowError(
                    f"this message alone ({len(tokens)} tokens) does not fit the context of {n_ctx}; /reset or raise -c"
                )
            return tokens
        del history[len(base) : len(base) + 2]
        write("(oldest turn dropped to fit the context)", err=True)
