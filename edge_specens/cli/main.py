"""The `edge-specens` command line: generate, chat, models, bench, serve.

Errors never show a traceback: bad usage exits 2, other failures exit 1, each with
one line on stderr (set EDGE_SPECENS_DEBUG=1 to see the traceback).
"""

from __future__ import annotations

import json
import os
import sys

import click

from ..errors import EdgeSpecensError
from .console import Stream, install_log_handler, streaming
from .options import llama_cpp_hint, load_ensemble, model_options, pass_opts, sampling_kwargs, sampling_options

# the one word of the paper the help cannot avoid (--top-k "of r", provenance "drawn from r")
R_EXPLAINED = (
    "r is the ensemble's combined next-token distribution: the members' probabilities mixed by their "
    "--weights (--mode we), or the expert's contrasted with the amateur's (--mode cd). Every token is drawn "
    "from r; the members' drafts only make that faster, never change it."
)
TEMP_HELP = (
    "Temperature (0 = greedy). Default 0.8, as llama.cpp's; `eval` defaults to 0, since a quality score "
    "should measure the most likely answer, not one random draw."
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="edge-specens", prog_name="edge-specens")
def cli():
    """Run several local GGUF models as one, fast and exactly (Speculative Ensemble)."""


# ---------------------------------------------------------------------------- generate
@cli.command(epilog=R_EXPLAINED)
@click.argument("prompt", required=False)
@model_options
@sampling_options(overrides={"temperature": (0.8, TEMP_HELP)})
@click.option("--prompt", "prompt_opt", default=None, help="The prompt (llama.cpp's -p; or give it as the argument).")
@click.option("-f", "--file", "prompt_file", type=click.File("r", encoding="utf-8"), help="Read the prompt from FILE.")
@click.option("--chat", "use_chat", is_flag=True, help="Wrap the prompt in the model's chat template.")
@click.option(
    "--json", "as_json", is_flag=True, help="Print one JSON object (text, tokens, finish_reason, stats, provenance)."
)
@click.option(
    "--provenance",
    is_flag=True,
    help="Colour each token by where it came from: the member whose draft was accepted, prompt lookup, "
    "a resample after a rejected draft, or drawn from r, the ensemble's combined distribution, directly "
    "(legend on stderr).",
)
@click.option(
    "-cnv",
    "--conversation",
    is_flag=True,
    help="Chat instead, as llama.cpp's -cnv (the same as `edge-specens chat`); a prompt becomes the system message.",
)
@pass_opts
def generate(opts):
    """Generate a continuation of PROMPT (or --prompt TEXT, -f FILE, - for stdin), streamed as tokens are accepted."""
    if opts["conversation"]:
        _conversation(opts)
        return
    opts["prompt"] = _prompt_text(opts)
    if opts["as_json"]:
        ens = None
        try:
            ens = load_ensemble(opts, progress=False)
            gen = ens.events(_prompt(ens, opts), **sampling_kwargs(opts))
            provenance = [_origin(ens, gen, ev) for ev in gen if ev.token >= 0]
        except KeyboardInterrupt:  # still one JSON object: what was generated, and why it stopped
            click.echo(json.dumps(_interrupted(ens.last_result if ens is not None else None)))
            raise click.exceptions.Exit(130) from None  # said all there is to say: no "aborted" after it
        assert gen.result is not None
        click.echo(json.dumps({**gen.result.to_dict(), "provenance": provenance}))
        return
    ens = load_ensemble(opts)
    prompt, kw = _prompt(ens, opts), sampling_kwargs(opts)
    # a warning logged while the text streams (a slow machine, say) gets a line of its own
    with streaming(Stream()) as out:
        try:
            if opts["provenance"]:
                gen = ens.events(prompt, **kw)
                for ev in gen:
                    out.piece(ev.text, **_colour(_origin(ens, gen, ev)))
                out.finish()
                click.echo(_legend(ens), err=True)
            else:
                for piece in ens.stream(prompt, **kw):
                    out.piece(piece)
                out.finish()
        except KeyboardInterrupt:
            out.finish()
            click.echo("[interrupted]", err=True)
            if ens.last_result is not None:
                click.echo(ens.last_result.summary(), err=True)
            raise click.exceptions.Exit(130) from None  # status 130, as for any Ctrl-C; nothing more to say
    res = ens.last_result
    if res is not None:
        click.echo(res.summary(), err=True)


MEMBER_COLOURS = ("cyan", "yellow", "magenta", "blue", "bright_cyan", "bright_yellow")


def _origin(ens, gen, ev) -> dict:
    """Where an accepted token came from: how ("accepted"/"bonus": a member's draft; "lookup"; "resampled"
    after a rejection; "sampled" from r) and which member (an ensemble index) proposed it."""
    member = gen.plan.members[ev.step.member] if ev.step.member is not None else None
    if ev.token < 0:
        return {"token": None, "text": ev.text, "how": "flush", "member": None}
    return {"token": ev.token, "text": ens.detokenize([ev.token]), "how": ev.step.how, "member": member}


def _colour(origin: dict) -> dict:
    how, member = origin["how"], origin["member"]
    if how == "lookup":
        return {"fg": "green"}
    if how == "resampled":
        return {"fg": "red"}
    if member is not None:
        return {"fg": MEMBER_COLOURS[member % len(MEMBER_COLOURS)]}
    return {}


def _legend(ens) -> str:
    parts = [
        click.style(f"{m.name}'s draft", fg=MEMBER_COLOURS[k % len(MEMBER_COLOURS)]) for k, m in enumerate(ens.members)
    ]
    parts += [
        click.style("prompt lookup", fg="green"),
        click.style("resampled after a rejected draft", fg="red"),
        "plain: drawn from r (the ensemble's combined distribution) directly",
    ]
    return "[" + ", ".join(parts) + "]"


def _prompt_text(opts: dict) -> str:
    """The one prompt given, as the argument, --prompt or -f; a clear error for none or several."""
    given = [p for p in (opts["prompt"], opts["prompt_opt"]) if p is not None]
    if opts["prompt_file"] is not None:
        given.append(opts["prompt_file"].read())
    if len(given) > 1:
        raise click.UsageError("give the prompt once: as the argument, --prompt or -f")
    if not given:
        from ..presets import list_presets

        preset = opts.get("preset")
        if preset is not None and preset not in list_presets():  # llama.cpp's -p "prompt"
            raise click.UsageError(
                f"-p/--preset takes a preset name, and {preset[:40]!r} is none; for a prompt use --prompt TEXT "
                "(llama.cpp's -p) or give it as the argument"
            )
        raise click.UsageError('give a prompt: edge-specens generate "..." (or --prompt TEXT, -f FILE, - for stdin)')
    return given[0]


def _prompt(ens, opts: dict):
    """PROMPT as given (`-` reads stdin), in the chat template with --chat."""
    prompt = sys.stdin.read() if opts["prompt"] == "-" else opts["prompt"]
    if opts["use_chat"]:
        return ens.chat_template.tokens([{"role": "user", "content": prompt}])
    return prompt


def _conversation(opts: dict) -> None:
    """`generate -cnv` (llama.cpp's conversation mode): the chat REPL, a prompt as its system message,
    replies uncapped unless -n was given."""
    from .chat_repl import run_repl

    given = [p for p in (opts["prompt"], opts["prompt_opt"]) if p is not None]
    if opts["prompt_file"] is not None:
        given.append(opts["prompt_file"].read())
    kw = sampling_kwargs(opts)
    source = click.get_current_context().get_parameter_source("max_tokens")
    if source is not click.core.ParameterSource.COMMANDLINE:
        kw.pop("max_tokens", None)  # chat's default: no cap
    ens = load_ensemble(opts)
    run_repl(ens, kw, system="\n".join(given) or None)


def _interrupted(res) -> dict:
    """`generate --json`'s object after Ctrl-C: the partial result with its note (an empty one if
    the prompt was still being read)."""
    if res is None or res.stats.note != "interrupted":
        return {"text": "", "tokens": [], "finish_reason": None, "stats": None, "note": "interrupted"}
    return {**res.to_dict(), "note": res.stats.note}


# ---------------------------------------------------------------------------- chat
@cli.command(epilog=R_EXPLAINED)
@model_options
@sampling_options(
    overrides={
        "max_tokens": (None, "Cap each reply at this many tokens (default: no cap)."),
        "temperature": (0.8, TEMP_HELP),
    }
)
@click.option("--system", default=None, help="System message (/set system changes it).")
@click.option(
    "-v",
    "--verbose",
    "chat_verbose",
    is_flag=True,
    help="After each reply: prompt and reply speeds, what ran, acceptance.",
)
@pass_opts
def chat(opts):
    """Multi-turn chat. Replies run to their end (or a full context) unless -n caps them; Ctrl-C stops a
    reply (at the prompt it clears the line), Ctrl-D or /exit quits. /help lists the commands: /set temp
    0.2 and /set system ... change settings, /show lists them, /stats shows the last reply's speed, /reset
    clears the history. A line of three double quotes starts and ends a multi-line message; a trailing
    backslash continues a line."""
    from .chat_repl import run_repl

    kw = sampling_kwargs(opts)
    if kw.get("max_tokens") is None:
        kw.pop("max_tokens", None)  # no cap by default in chat
    ens = load_ensemble(opts)
    run_repl(ens, kw, system=opts["system"], verbose=opts["chat_verbose"])


# ---------------------------------------------------------------------------- models
@cli.group()
def models():
    """List, fetch and inspect models."""


@models.command("list")
@click.option(
    "--all",
    "show_all",
    is_flag=True,
    help="Also every GGUF that Ollama, LM Studio and the Hugging Face cache already hold, with the reference "
    "that loads it in place (-m ollama:NAME, -m lmstudio:PUBLISHER/MODEL, -m owner/repo:file.gguf); headers only.",
)
def models_list(show_all):
    """Presets, their members and whether each is cached ([hub only]: named by Hugging Face repos, unpinned,
    so they need the Hugging Face cache or a reachable hub). A broken preset file is named on stderr with
    what is wrong, one line each; the others are still listed (then exit 2)."""
    from ..errors import PresetError
    from ..fetch import cache_dir, cached_path
    from ..presets import DEFAULT_PRESET, list_presets, load_preset

    click.echo(f"cache: {cache_dir()}")
    broken = []
    for name in list_presets():
        try:
            p = load_preset(name)
        except PresetError as e:
            broken.append(name)
            click.echo(f"preset {name} is broken: {e}", err=True)
            continue
        extra = (
            f"weights {list(p.weights)}" if p.method == "we" and p.weights else f"mu {p.mu}" if p.method == "cd" else ""
        )
        default = " (default)" if name == DEFAULT_PRESET else ""
        hub_only = " [hub only]" if all(m.hub_only for m in p.members) else ""
        click.echo(f"{name}{default}{hub_only}: {p.method} {extra} gamma {list(p.gamma) if p.gamma else '-'}")
        if p.description:
            click.echo(f"  {p.description}")
        for m in p.members:
            where = cached_path(m)
            state = str(where) if where else "not cached: edge-specens models pull " + name
            if m.hub_only:
                state = f"hub only; cached {where}" if where else f"hub only; {state} (needs the hub)"
            size = f"  {m.size / 1e6:,.0f} MB" if m.size else ""
            click.echo(f"  - {m.file}{size}  [{state}]")
    if show_all:
        from .stores import print_stores

        print_stores()
    if broken:
        raise PresetError(
            f"{len(broken)} broken preset{'s' if len(broken) > 1 else ''} not listed: {', '.join(broken)}"
        )


@models.command("pull")
@click.argument("name")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def models_pull(name, quiet):
    """Fetch and verify every file of preset NAME (HF cache/hub, then the offline mirror), or one GGUF
    named on Hugging Face as owner/repo:file.gguf or hf://owner/repo/file.gguf."""
    from ..fetch import hub_reference, pull_preset, resolve_model
    from ..presets import load_preset

    if hub_reference(name) is not None:
        click.echo(str(resolve_model(name)))
        return
    preset = load_preset(name)
    for path in pull_preset(preset, progress=not quiet):
        click.echo(str(path))


@models.command("info")
@click.argument("path")
@click.option(
    "--against",
    "against",
    default=None,
    metavar="GGUF",
    help="Also say, from the headers alone, how well PATH's vocabulary maps onto GGUF's (GGUF as the primary) "
    "and back.",
)
def models_info(path, against):
    """Architecture, size, quantization, vocabulary and context of a GGUF file, or of every member of a
    preset (reads headers only, never the weights)."""
    from ..fetch import cached_path
    from ..presets import list_presets, load_preset

    if against is not None:
        _print_mapping(_local_file(path), _local_file(against))
        return
    if not os.path.exists(path) and path in list_presets():
        preset = load_preset(path)
        for i, m in enumerate(preset.members):
            where = cached_path(m)
            click.echo(("\n" if i else "") + f"{preset.name} member {i}: {m.file}")
            if where is None:
                click.echo(f"  not cached: edge-specens models pull {preset.name}")
            else:
                _print_info(where)
        return
    _print_info(_local_file(path))


def _local_file(ref: str) -> str:
    """The file `ref` names when it is already on this machine: a path, or a model Ollama or LM Studio
    holds (ollama:NAME, lmstudio:..., a bare LM Studio folder name); anything else unchanged (never fetched)."""
    from ..sources import local_file, parse_reference

    r = parse_reference(ref)
    return str(local_file(r)) if r.kind in ("path", "ollama", "lmstudio") else ref


def _print_mapping(path, against) -> None:
    """One report line per direction: PATH following AGAINST's vocabulary, and AGAINST following PATH's."""
    from ..gguf_header import validate_gguf
    from ..vocabulary import TokenTable, report

    a, b = (TokenTable.from_info(validate_gguf(p, read_tokens=True)) for p in (path, against))
    _print_info(path)
    click.echo("")
    for follower, primary in ((a, b), (b, a)):
        r = report(primary, follower)
        click.echo(r.line())
        if r.identical:
            break  # the other direction says the same


def _print_info(path) -> None:
    from ..gguf_header import validate_gguf

    info = validate_gguf(path)
    meta = info.metadata
    rows = [
        ("file", str(info.path)),
        ("size", f"{info.file_size:,} bytes"),
        ("name", meta.get("general.name", "-")),
        ("architecture", info.architecture),
        ("parameters", f"{info.n_params:,} ({info.n_params / 1e9:.2f} B)"),
        ("quantization", info.quantization),
        ("vocab size", f"{info.n_vocab:,}"),
        ("tokenizer", meta.get("tokenizer.ggml.model", "-")),
        ("trained context", f"{info.context_length:,}" if info.context_length else "-"),
        ("layers", meta.get(f"{info.architecture}.block_count", "-")),
        ("chat template", "yes" if info.chat_template else "no"),
        ("GGUF version", info.version),
    ]
    for k, v in rows:
        click.echo(f"{k:16s} {v}")


# ---------------------------------------------------------------------------- rpc-server
@cli.command("rpc-server")
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="IPv4 address to listen on (see the warning for anything but loopback).",
)
@click.option("--port", type=click.IntRange(1, 65535), default=50052, show_default=True, help="TCP port.")
@click.option(
    "-t", "--threads", type=click.IntRange(min=1), default=None, help="CPU threads for the graphs (default: all cores)."
)
@click.option(
    "--device",
    "devices",
    multiple=True,
    help="Device to serve, e.g. CUDA0 or CPU (repeatable; default: every GPU, else the CPU).",
)
@click.option(
    "--cache",
    "cache",
    type=click.Path(file_okay=False),
    default=None,
    help="Keep received tensors here, so a reconnecting client need not resend its weights "
    "(default: the model cache's rpc/).",
)
@click.option("--no-cache", is_flag=True, help="Keep nothing on disk.")
def rpc_server(host, port, threads, devices, cache, no_cache):
    """Serve this machine's CPU or GPU to an ensemble on another machine (llama.cpp's RPC server).

    There: edge-specens generate -m model.gguf@THIS-HOST:PORT ... Stop with Ctrl-C."""
    from pathlib import Path

    from ..member import default_threads
    from ..remote import server
    from ..remote.endpoint import Endpoint

    where = None if no_cache else Path(cache) if cache else server.default_cache()
    rc = server.run(
        Endpoint(host, port), threads or default_threads(), list(devices), where, echo=lambda m: click.echo(m, err=True)
    )
    if rc:
        raise click.exceptions.Exit(rc)


def _register_optional():
    """bench and serve live in their own modules (with heavier imports)."""
    try:
        from .bench import bench

        cli.add_command(bench)
    except ImportError:
        pass
    try:
        from .serve import serve

        cli.add_command(serve)
    except ImportError:
        pass
    from .evaluate import evaluate

    cli.add_command(evaluate)


_register_optional()


# ---------------------------------------------------------------------------- entry point
def main(argv=None) -> int:
    """Run the CLI; map every error to an exit status and one stderr line."""
    debug = bool(os.environ.get("EDGE_SPECENS_DEBUG"))
    install_log_handler()  # warnings on lines of their own, never inside streamed text
    try:
        rc = cli.main(args=argv, prog_name="edge-specens", standalone_mode=False)
        return rc if isinstance(rc, int) else 0  # a command's Exit(code) comes back as its return value
    except click.exceptions.NoArgsIsHelpError as e:  # `edge-specens`, `edge-specens models`: the help, as ollama
        click.echo(e.ctx.get_help())
        return 0
    except click.exceptions.Abort as e:
        click.echo("interrupted" if isinstance(e.__cause__, KeyboardInterrupt) else "aborted", err=True)
        return 130
    except click.exceptions.Exit as e:
        return e.exit_code
    except click.NoSuchOption as e:
        hint = llama_cpp_hint(e.option_name, e.ctx)
        msg = e.format_message().replace("\n", " ")
        click.echo(f"error: {msg.rstrip('.')}; {hint}" if hint else f"error: {msg}", err=True)
        return 2
    except click.UsageError as e:
        msg = e.format_message().replace("\n", " ")
        click.echo(f"error: {msg}", err=True)
        return 2
    except click.ClickException as e:
        click.echo(f"error: {e.format_message()}", err=True)
        return e.exit_code or 1
    except EdgeSpecensError as e:
        if debug:
            raise
        click.echo(f"error: {e}", err=True)
        return e.exit_code
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        return 130
    except BrokenPipeError:
        return 1
    except Exception as e:  # a bug: still one line, never a traceback
        if debug:
            raise
        click.echo(f"error: {type(e).__name__}: {e} (set EDGE_SPECENS_DEBUG=1 for details)", err=True)
        return 1


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
