"""The interactive `edge-specens chat` loop.

Each turn re-renders the whole history with the chat template; the members keep
their KV caches, so only the new turn is evaluated. Ctrl-C stops the current reply
(what was generated so far stays in the history). Lines are edited with the standard
library's readline (arrows, history kept in a file between sessions); a message may
span lines: a block between \"\"\" lines, or lines ending in a backslash, as in ollama
and llama-cli. Commands start with a slash (COMMANDS; /help lists them). Ctrl-C at the prompt
clears the line and says how to leave, as ollama and the Python REPL do: the conversation stays.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import click

from ..chat import chat_template
from ..errors import ContextOverflowError, EdgeSpecensError, InvalidParameterError
from ..params import GenerationOptions
from .console import Stream, streaming
from .options import CONSTRAINT_FILE_OPTIONS, constraint_text

COMMANDS = (
    ("/set temp 0.2", "set a generation option (temp, n, top-k, top-p, min-p, seed, strategy, ...)"),
    ("/set system <text>", "set the system message (/set system alone clears it)"),
    ("/show", "the settings in use"),
    ("/stats", "the last reply's speed and what ran (/stats -v: what each member did)"),
    ("/reset", "clear the conversation"),
    ("/help", "this list"),
    ("/exit", "leave (also /bye, /quit or Ctrl-D)"),
)
INPUT_HELP = (
    'A line of three double quotes (""") starts and ends a multi-line message; a trailing \\ continues a line. '
    "Ctrl-C stops a reply, or clears the line at the prompt."
)
HELP = "/help lists the commands; Ctrl-D or /exit leaves"
LEAVE_HINT = "(to leave the chat: Ctrl-D or /exit; the conversation is kept)"
# /set names people type, and the generation option each one sets
SET_ALIASES = {"temp": "temperature", "n": "max_tokens", "top-k": "top_k", "top-p": "top_p", "min-p": "min_p"}


def run_repl(
    ens,
    sampling_kw: dict,
    system: str | None = None,
    read: Callable[[str], str] = input,
    write: Callable[..., None] = click.echo,
    verbose: bool = False,
) -> None:
    """sampling_kw: the generation options; without max_tokens a reply runs until the model ends
    it or the context is full (the history then drops its oldest turns)."""
    settings = dict(sampling_kw)
    state = {"system": system}
    history: list[dict] = []
    template = chat_template(ens)
    write(f"edge-specens chat with {ens.name} ({HELP})", err=True)
    with _history_file(read):
        while True:
            try:
                line = _read_message(read)
            except EOFError:
                write("")
                return
            except KeyboardInterrupt:  # at the prompt: drop what was typed, stay (ollama, the Python REPL)
                write("")
                write(LEAVE_HINT, err=True)
                continue
            cmd = line.strip()
            if not cmd:
                continue
            if cmd.startswith("/"):
                if cmd in ("/exit", "/quit", "/bye"):
                    return
                _command(cmd, ens, settings, state, history, write)
                continue
            base = [{"role": "system", "content": state["system"]}] if state["system"] else []
            history.append({"role": "user", "content": line})
            try:
                prompt = _fit(template, base, history, ens.n_ctx, write)
            except ContextOverflowError as e:
                history.pop()
                write(f"error: {e}", err=True)
                continue
            reply = _reply(ens, prompt, settings, write)
            history.append({"role": "assistant", "content": reply})
            res = ens.last_result
            if res is not None and verbose:
                write(describe(res), err=True)


def _reply(ens, prompt: list[int], settings: dict, write) -> str:
    kw = dict(settings)
    capped = "max_tokens" in kw
    if not capped:
        kw["max_tokens"] = max(1, ens.n_ctx - len(prompt))
    reply: list[str] = []
    with streaming(Stream(write)) as out:  # a warning logged meanwhile starts on a line of its own
        try:
            for piece in ens.stream(prompt, **kw):
                out.piece(piece)
                reply.append(piece)
        except KeyboardInterrupt:
            out.piece(" [stopped]")
        except EdgeSpecensError as e:
            out.end_line()
            write(f"error: {e}", err=True)
        out.finish()
    res = ens.last_result
    if res is not None and capped and res.finish_reason == "length" and not res.stats.note:
        write(f"[reply cut at {kw['max_tokens']} tokens (-n); /set n <tokens> for longer replies]", err=True)
    elif res is not None and res.stats.note and res.stats.note.startswith("context full"):
        write("[reply cut: the context is full; older turns will be dropped, or raise -c]", err=True)
    return "".join(reply)


def _command(cmd: str, ens, settings: dict, state: dict, history: list, write) -> None:
    name, _, rest = cmd.partition(" ")
    if name == "/reset":
        history.clear()
        write("history cleared", err=True)
    elif name == "/stats":
        res = ens.last_result
        verbose = rest.strip() in ("-v", "--verbose")
        write((res.details() if verbose else res.summary()) if res else "no reply yet", err=True)
    elif name in ("/help", "/?"):
        width = max(len(c) for c, _ in COMMANDS)
        write("\n".join([f"  {c:<{width}}  {what}" for c, what in COMMANDS] + [INPUT_HELP]), err=True)
    elif name == "/show":
        given = {k: v for k, v in settings.items() if v not in (None, ())}
        shown = {**{k: v for k, v in GenerationOptions().__dict__.items() if v not in (None, ())}, **given}
        if "max_tokens" not in settings:
            shown["max_tokens"] = "until the end of the reply or a full context"
        write("\n".join([f"system: {state['system'] or '-'}"] + [f"{k}: {v}" for k, v in shown.items()]), err=True)
    elif name == "/set":
        key, _, value = rest.strip().partition(" ")
        if key == "system":
            state["system"] = value.strip() or None
            write("system message set" if value.strip() else "system message cleared", err=True)
            return
        try:
            option, parsed = _parse_setting(key, value.strip())
            GenerationOptions(**{**settings, option: parsed})  # checked now, not at the next reply
        except (InvalidParameterError, ValueError, TypeError) as e:
            write(f"error: {e}", err=True)
            return
        settings[option] = parsed
        write(f"{option} = {parsed}", err=True)
    else:
        write(f"unknown command {name}; /help lists the commands", err=True)


def _parse_setting(key: str, value: str):
    option = SET_ALIASES.get(key, key.replace("-", "_"))
    fields = GenerationOptions.__dataclass_fields__
    if option not in fields or option == "stop":
        raise InvalidParameterError(f"/set knows system, {', '.join(sorted(SET_ALIASES))} and the generation options")
    if not value:
        raise InvalidParameterError(f"/set {key} needs a value")
    default = fields[option].default
    if option in ("seed", "lookup") or isinstance(default, int) and not isinstance(default, bool):
        if value in ("none", "auto"):
            return option, None
        return option, _number(key, value, int, "a whole number")
    if isinstance(default, float):
        return option, _number(key, value, float, "a number")
    if option == "parallel":
        choice = {"on": True, "true": True, "off": False, "false": False, "auto": None}
        if value.lower() not in choice:
            raise InvalidParameterError(f"/set {key} takes on, off or auto, got {value!r}")
        return option, choice[value.lower()]
    if option in CONSTRAINT_FILE_OPTIONS:  # /set grammar FILE reads the file, as --grammar FILE does
        return option, constraint_text(value, option)
    return option, value


def _number(key: str, value: str, kind: type, what: str):
    """`value` as an int or float, or one line that says what /set KEY takes."""
    try:
        return kind(value)
    except ValueError:
        example = f" (e.g. /set {key} 0.2)" if kind is float else ""
        raise InvalidParameterError(f"/set {key} takes {what}, got {value!r}{example}") from None


def _read_message(read: Callable[[str], str]) -> str:
    """One message: a line, lines joined by trailing backslashes, or a \"\"\" block."""
    line = read(">>> ")
    if line.strip().startswith('"""'):
        body = line.strip()[3:]
        if body.endswith('"""') and body:
            return body[:-3]
        lines = [body] if body else []
        while True:
            nxt = read("... ")
            if nxt.rstrip().endswith('"""'):
                lines.append(nxt.rstrip()[:-3])
                return "\n".join(lines)
            lines.append(nxt)
    lines = []
    while line.endswith("\\"):
        lines.append(line[:-1])
        line = read("... ")
    lines.append(line)
    return "\n".join(lines)


class _history_file:  # noqa: N801 (a context manager used like a function)
    """Line editing and a persistent history for the built-in input() on a terminal (readline)."""

    def __init__(self, read):
        self.active = read is input and _is_tty()
        self.path = Path(os.environ.get("EDGE_SPECENS_HISTORY") or _state_dir() / "chat_history")

    def __enter__(self):
        if not self.active:
            return self
        try:
            import readline

            readline.set_history_length(1000)
            if self.path.exists():
                readline.read_history_file(self.path)
        except (ImportError, OSError):
            self.active = False
        return self

    def __exit__(self, *exc):
        if self.active:
            try:
                import readline

                self.path.parent.mkdir(parents=True, exist_ok=True)
                readline.write_history_file(self.path)
            except OSError:
                pass


def _is_tty() -> bool:
    import sys

    return sys.stdin.isatty()


def _state_dir() -> Path:
    return Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state") / "edge_specens"


def describe(res) -> str:
    """The --verbose summary in plain words: prompt and generation rates apart, what ran, acceptance."""
    s = res.stats
    gen_s = max(s.seconds - s.prompt_seconds, 1e-9)
    read = s.prompt_tokens - s.reused_tokens
    prompt = f"prompt {read} tokens in {s.prompt_seconds:.2f} s" + (
        f" ({read / s.prompt_seconds:.0f} tok/s)" if s.prompt_seconds > 0 and read else ""
    )
    if s.reused_tokens:
        prompt += f", {s.reused_tokens} reused from the cache"
    what = s.ran
    if s.parallel:
        what += f" on {'+'.join(map(str, s.member_threads))} threads"
    acc = f"; {100 * s.acceptance_rate:.0f} % of drafts accepted" if s.acceptance_rate is not None else ""
    return f"[{prompt}; reply {s.new_tokens} tokens at {s.new_tokens / gen_s:.1f} tok/s; {what}{acc}]"


def _fit(template, base: list, history: list, n_ctx: int, write) -> list[int]:
    """Tokens of system + history; drop the oldest turns until it fits."""
    while True:
        tokens = template.tokens(base + history)
        if len(tokens) < n_ctx - 16 or len(history) <= 1:
            if len(tokens) >= n_ctx:
                raise ContextOverflowError(
                    f"this message alone ({len(tokens)} tokens) does not fit the context of {n_ctx}; /reset or raise -c"
                )
            return tokens
        del history[:2]
        write("(oldest turn dropped to fit the context)", err=True)
