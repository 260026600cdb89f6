"""Click options shared by every command that loads an ensemble (generate, chat, bench, serve).

Declared once so flags cannot drift between commands; `load_ensemble(opts)` turns the
parsed values into an Ensemble.
"""

from __future__ import annotations

import functools
import os
import stat
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import fields

import click

from ..errors import EdgeSpecensError, InvalidParameterError
from ..params import GENERATION_OPTIONS, GenerationOptions


def _floats(value: str | None, name: str) -> list[float] | None:
    if value is None:
        return None
    try:
        return [float(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"expected numbers separated by commas, got {value!r}", param_hint=name) from None


class PerMember(click.ParamType):
    """An integer for every member, or one per member separated by commas (-t 1,1; -ngl 0,-1)."""

    name = "N[,N...]"

    def __init__(self, minimum: int):
        self.minimum = minimum

    def convert(self, value, param, ctx):
        if isinstance(value, (int, list)):
            return value
        try:
            vs = [int(v) for v in str(value).split(",")]
        except ValueError:
            self.fail(f"expected an integer or integers separated by commas, got {value!r}", param, ctx)
        bad = [v for v in vs if v < self.minimum]
        if bad:
            self.fail(f"{bad[0]} is below the minimum of {self.minimum}", param, ctx)
        return vs[0] if len(vs) == 1 else vs


class CacheRam(click.ParamType):
    """--cache-ram: MiB for saved prompts (prompt_cache.py), a number >= 0."""

    name = "MIB"

    def convert(self, value, param, ctx):
        if isinstance(value, float):
            return value
        from ..prompt_cache import parse_cache_ram

        try:
            return parse_cache_ram(str(value))
        except InvalidParameterError:
            self.fail(f"expected a number of MiB >= 0 (0 turns saved prompts off), got {value!r}", param, ctx)


def model_options(f):
    """-m/-p plus ensemble and llama.cpp options."""
    opts = [
        click.option(
            "-m",
            "--model",
            "models",
            multiple=True,
            type=click.Path(dir_okay=False),
            help="GGUF file of a member (repeat for each member; for --mode cd the expert first), or a model "
            "you already have: ollama:NAME[:TAG], lmstudio:PUBLISHER/MODEL, owner/repo:file.gguf (Hugging Face); "
            "`models list --all` lists them. FILE@HOST:PORT runs that member on an `edge-specens rpc-server` "
            "at HOST:PORT.",
        ),
        click.option(
            "-hf",
            "--hf-repo",
            "hf_models",
            multiple=True,
            metavar="REPO[:QUANT|:FILE]",
            help="A member from Hugging Face, as llama.cpp's -hf: OWNER/REPO picks its Q4_K_M GGUF, OWNER/REPO:Q8_0 "
            "another quantization, OWNER/REPO:FILE.gguf that file (repeatable; after the -m members). Found in "
            "the Hugging Face cache or ours first, else downloaded.",
        ),
        click.option(
            "-p",
            "--preset",
            default=None,
            help="Preset name from `edge-specens models list` (default: qwen2.5-coder-duo unless -m is given).",
        ),
        click.option(
            "--mode",
            type=click.Choice(["we", "cd"]),
            default=None,
            help="we: weighted ensemble; cd: contrastive decoding (default: the preset's, else we).",
        ),
        click.option("--weights", default=None, help="WE weights, e.g. 0.5,0.5 (default: the preset's, else equal)."),
        click.option(
            "--primary",
            type=click.IntRange(min=0),
            default=None,
            help="The member whose vocabulary r lives on (default: the preset's, else 0; --mode cd: the expert, 0). "
            "Members with another tokenizer follow it through a fixed map.",
        ),
        click.option(
            "--vocab",
            type=click.Choice(["auto", "shared", "bridge"]),
            default=None,
            help="auto: members with another tokenizer follow the primary's (default); shared: refuse them; "
            "bridge: map every member, even with the same tokenizer (for tests).",
        ),
        click.option("--mu", type=float, default=None, help="CD strength (default: the preset's, else 0.1)."),
        click.option(
            "--alpha", type=float, default=None, help="CD plausibility mask (default: the preset's, else 0 = off)."
        ),
        click.option(
            "-c",
            "--ctx-size",
            "n_ctx",
            type=click.IntRange(min=8),
            default=4096,
            show_default=True,
            help="Context length per member.",
        ),
        click.option(
            "-t",
            "--threads",
            "n_threads",
            type=PerMember(1),
            default=None,
            help="Threads for single-token decodes, or one count per member (e.g. 1,1: also the split when "
            "members run side by side). Default: all cores, fewer while other programs load the machine; "
            "side by side, auto picks the split.",
        ),
        click.option(
            "-tb",
            "--threads-batch",
            "n_threads_batch",
            type=PerMember(1),
            default=None,
            help="Threads for batches (verification), or one count per member. Default: as -t.",
        ),
        click.option(
            "-ngl",
            "--n-gpu-layers",
            "n_gpu_layers",
            type=PerMember(-1),
            default=0,
            show_default=True,
            help="Layers to offload to the GPU (-1 = all), or one count per member (e.g. 0,-1: the second "
            "member on the GPU).",
        ),
        click.option(
            "--rpc",
            "rpc",
            default=None,
            metavar="[HOST:PORT],...",
            help="Where each member runs, in member order: empty = here, HOST:PORT = on the `edge-specens "
            "rpc-server` there (e.g. ,192.168.1.20:50052 puts a preset's second member there).",
        ),
        click.option(
            "-fa",
            "--flash-attn",
            "flash_attn",
            type=click.Choice(["on", "off", "auto"], case_sensitive=False),
            is_flag=False,
            flag_value="on",
            default=None,
            help="Flash attention on, off or auto (default auto: llama.cpp decides); -fa alone means on.",
        ),
        click.option("--no-flash-attn", "no_flash_attn", is_flag=True, help="The same as --flash-attn off."),
        click.option(
            "--mmap/--no-mmap",
            "mmap",
            default=None,
            help="Memory-map the weights (default: read them in; lower peak memory on CPU).",
        ),
        click.option(
            "--cache-ram",
            "cache_ram",
            type=CacheRam(),
            default=None,
            help="MiB of RAM for saved prompts, all members together: a request that shares more with an "
            "earlier conversation than with the last request (e.g. the next chat turn after a client's title "
            "request) restores it instead of reading it again. Default 8192, or half the RAM left once the "
            "weights are in if less; 0 turns it off.",
        ),
        click.option("--llama-log", "verbose", is_flag=True, help="Show llama.cpp's own log (loading, devices)."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


# llama.cpp's short spelling of a generation option, where it has one we do not derive from params.py
SHORT_FLAGS = {"seed": ("-s",)}


def sampling_options(f=None, *, overrides: dict | None = None):
    """One flag per generation option, built from params.GenerationOptions (help, flags, type).
    overrides: {name: (default, help)} for a command whose default differs (chat's -n: no cap)."""
    if f is None:
        return lambda g: sampling_options(g, overrides=overrides)
    for fld in reversed(fields(GenerationOptions)):
        meta = fld.metadata
        flags = SHORT_FLAGS.get(fld.name, ()) + (meta["flags"] or ("--" + fld.name.replace("_", "-"),))
        kind = meta["type"] or type(fld.default)
        default, help = (overrides or {}).get(fld.name, (fld.default, meta["help"]))
        show = default not in (None, ())
        f = click.option(
            *flags,
            fld.name,
            type=kind,
            default=None if meta["multiple"] else default,
            multiple=meta["multiple"],
            show_default=show,
            help=help,
            callback=_constraint_flag if fld.name in CONSTRAINT_FILE_OPTIONS else None,
        )(f)
    return f


# --grammar and --json-schema take text or a file name; the file is read here, in the CLI, and only its
# text goes further: the API and the server never open a file a constraint names (constrain.py)
CONSTRAINT_FILE_OPTIONS = ("grammar", "json_schema")


def _constraint_flag(ctx, param, value):
    if value is None:
        return None
    try:
        return constraint_text(value, param.name)
    except InvalidParameterError as e:
        raise click.BadParameter(str(e)) from None


def constraint_text(value: str, option: str) -> str:
    """A --grammar / --json-schema value as text: the contents of the file it names, or the value itself.

    A single line that names an existing path is a file (a regular one, UTF-8, at most the size the
    constraint may have); one that cannot be grammar or schema text (no ':' in a grammar, no '{' at the
    start of a schema) but names no file is an error that says so, not a confusing parse error."""
    from ..constrain import MAX_GRAMMAR_CHARS, MAX_SCHEMA_CHARS

    if "\n" in value or len(value) > 4096:
        return value
    path = os.path.expanduser(value.strip())
    limit = MAX_SCHEMA_CHARS if option == "json_schema" else MAX_GRAMMAR_CHARS
    if os.path.lexists(path):
        return _read_constraint_file(path, limit)
    text_like = value.lstrip().startswith("{") if option == "json_schema" else ":" in value
    if not text_like:
        what = "a JSON object" if option == "json_schema" else "GBNF or Lark grammar text"
        raise InvalidParameterError(f"no such file: {value} (and it is not {what})")
    return value


def _read_constraint_file(path: str, limit: int) -> str:
    try:
        # O_NONBLOCK: a FIFO opens at once (and is refused below) instead of waiting for a writer
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as e:
        raise InvalidParameterError(f"cannot read {path}: {e.strerror or e}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise InvalidParameterError(f"{path} is not a regular file")
        if st.st_size > limit:
            raise InvalidParameterError(f"{path} has {st.st_size} bytes; at most {limit} are allowed")
        data = b""
        while len(data) <= limit:  # the file may grow after fstat: never read more than limit + 1
            chunk = os.read(fd, limit + 1 - len(data))
            if not chunk:
                break
            data += chunk
    finally:
        os.close(fd)
    if len(data) > limit:
        raise InvalidParameterError(f"{path} has more than {limit} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidParameterError(f"{path} is not UTF-8 text") from None


def sampling_kwargs(opts: dict) -> dict:
    """The generation options among a command's parsed values (Ensemble.generate's keywords)."""
    kw = {k: opts[k] for k in GENERATION_OPTIONS if k in opts}
    kw["stop"] = list(kw.get("stop") or ()) or None
    return kw


def load_ensemble(opts: dict, *, progress: bool = True):
    """Build the Ensemble a command asked for (-m files or -p preset)."""
    from ..ensemble import Ensemble

    models, preset = list(opts.get("models") or ()), opts.get("preset")
    if opts.get("hf_models"):
        from ..fetch import resolve_hub_repo

        models += [str(resolve_hub_repo(ref)) for ref in opts["hf_models"]]
    if models and preset:
        raise InvalidParameterError("give either -m files (or -hf) or -p PRESET, not both")
    member_kw = {
        k: opts[k]
        for k in ("n_ctx", "n_threads", "n_threads_batch", "n_gpu_layers", "mmap", "cache_ram")
        if opts.get(k) is not None
    }
    flash = "off" if opts.get("no_flash_attn") else (opts.get("flash_attn") or "auto").lower()
    if flash != "auto":  # auto: llama.cpp decides
        member_kw["flash_attn"] = flash == "on"
    if opts.get("rpc"):
        member_kw["rpc"] = [e.strip() or None for e in opts["rpc"].split(",")]
    member_kw["verbose"] = bool(opts.get("verbose"))
    if progress and sys.stderr.isatty():  # for people waiting (seconds to a minute); scripts get no chatter
        click.echo(f"loading {', '.join(models) if models else preset or 'the default preset'}...", err=True)
    ens_kw = {}
    if opts.get("mode"):
        ens_kw["method"] = opts["mode"]
    weights = _floats(opts.get("weights"), "--weights")
    if weights is not None:
        ens_kw["weights"] = weights
    for k in ("mu", "alpha", "primary", "vocab"):
        if opts.get(k) is not None:
            ens_kw[k] = opts[k]
    if models:
        ens = Ensemble.from_paths(list(models), **ens_kw, **member_kw)
    else:
        from ..presets import DEFAULT_PRESET

        check_preset_name(preset)
        ens = Ensemble.from_preset(preset or DEFAULT_PRESET, progress=progress, **ens_kw, **member_kw)
    _warn_unused(opts, ens)
    return ens


# llama.cpp flags we spell differently or do not have: what to type instead (NoSuchOption's hint)
LLAMA_CPP_FLAGS = {
    "-i": "for a conversation use `edge-specens chat` (or generate -cnv)",
    "--interactive": "for a conversation use `edge-specens chat` (or generate -cnv)",
    "-if": "for a conversation use `edge-specens chat` (or generate -cnv)",
    "--interactive-first": "for a conversation use `edge-specens chat` (or generate -cnv)",
    "-sys": "the system message is chat's --system TEXT",
    "--system-prompt": "the system message is chat's --system TEXT",
    "-co": "`generate --provenance` colours each token by where it came from",
    "--color": "`generate --provenance` colours each token by where it came from",
    "-hff": "name the file with -hf OWNER/REPO:FILE.gguf",
    "--hf-file": "name the file with -hf OWNER/REPO:FILE.gguf",
    "-v": "llama.cpp's own log is --llama-log (chat -v shows each reply's speed)",
    "--verbose": "llama.cpp's own log is --llama-log (chat -v shows each reply's speed)",
    "--log-verbose": "llama.cpp's own log is --llama-log",
    "-ins": "for a conversation use `edge-specens chat`",
}


def llama_cpp_hint(option: str, ctx) -> str | None:
    """What to type instead of an unknown option: llama.cpp's spelling, or a model flag given before the
    command (`edge-specens -m x.gguf` needs a command first)."""
    if option in LLAMA_CPP_FLAGS:
        return LLAMA_CPP_FLAGS[option]
    group = ctx is not None and ctx.parent is None and isinstance(ctx.command, click.Group)
    if group and option in ("-m", "--model", "-p", "--preset", "-hf", "--hf-repo", "-c", "-n", "-cnv"):
        return f"name a command first, e.g. edge-specens chat {option} ... (or generate, serve; see edge-specens -h)"
    return None


def check_preset_name(preset: str | None) -> None:
    """llama.cpp users type -p "prompt": say which flag they meant instead of "unknown preset"."""
    from ..presets import list_presets

    if preset is not None and preset not in list_presets() and (" " in preset.strip() or len(preset) > 60):
        raise InvalidParameterError(
            f"-p/--preset takes a preset name (see `edge-specens models list`), got {preset[:40]!r}; "
            "for a prompt use --prompt TEXT (llama.cpp's -p) or give it as the argument"
        )


def _warn_unused(opts: dict, ens) -> None:
    """Options that do nothing for this ensemble: say so rather than ignore them silently."""
    cd = ens.spec.method == "cd"
    for name, flag in (("mu", "--mu"), ("alpha", "--alpha")):
        if opts.get(name) is not None and not cd:
            click.echo(f"warning: {flag} only applies to --mode cd; this ensemble is a weighted ensemble", err=True)
    if opts.get("weights") and cd:
        click.echo("warning: --weights only applies to --mode we; contrastive decoding uses --mu", err=True)


def pass_opts(f):
    """Collect all click params into one dict argument `opts`."""

    @functools.wraps(f)
    def wrapper(**kw):
        return f(kw)

    return wrapper


@contextmanager
def long_job_errors(interrupted: str) -> Iterator[None]:
    """For commands that run for minutes (bench, eval): typed errors as click errors (usage: exit 2),
    Ctrl-C as one line saying what was kept, an unwritable output folder as one line."""
    try:
        yield
    except EdgeSpecensError as e:
        if e.exit_code == 2:
            raise click.UsageError(str(e)) from None
        raise click.ClickException(str(e)) from None
    except KeyboardInterrupt:
        raise click.ClickException(interrupted) from None
    except OSError as e:
        raise click.ClickException(f"could not write the results: {e}") from None
