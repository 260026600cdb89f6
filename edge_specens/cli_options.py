"""Click options shared by every command that loads an ensemble (generate, chat, bench, serve).

Declared once so flags cannot drift between commands; `load_ensemble(opts)` turns the
parsed values into an Ensemble.
"""

from __future__ import annotations

import functools

import click

from .errors import InvalidParameterError


def _floats(value: str | None, name: str) -> list[float] | None:
    if value is None:
        return None
    try:
        return [float(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"expected numbers separated by commas, got {value!r}", param_hint=name) from None


def model_options(f):
    """-m/-p plus ensemble and llama.cpp options."""
    opts = [
        click.option("-m", "--model", "models", multiple=True, type=click.Path(dir_okay=False),
                     help="GGUF file of a member (repeat for each member; for --mode cd the expert first)."),
        click.option("-p", "--preset", default=None, help="Preset name from `edge-specens models list`."),
        click.option("--mode", type=click.Choice(["we", "cd"]), default=None,
                     help="we: weighted ensemble; cd: contrastive decoding."),
        click.option("--weights", default=None, help="WE weights, e.g. 0.5,0.5."),
        click.option("--mu", type=float, default=None, help="CD strength (default 0.1)."),
        click.option("--alpha", type=float, default=None, help="CD plausibility mask (0 = off)."),
        click.option("-c", "--ctx-size", "n_ctx", type=click.IntRange(min=8), default=4096, show_default=True,
                     help="Context length per member."),
        click.option("-t", "--threads", "n_threads", type=click.IntRange(min=1), default=None,
                     help="Threads for single-token decodes (default: all cores)."),
        click.option("-tb", "--threads-batch", "n_threads_batch", type=click.IntRange(min=1), default=None,
                     help="Threads for batches (verification)."),
        click.option("-ngl", "--n-gpu-layers", "n_gpu_layers", type=click.IntRange(min=-1), default=0,
                     show_default=True, help="Layers to offload to the GPU (-1 = all)."),
        click.option("--flash-attn/--no-flash-attn", "flash_attn", default=None, help="Force flash attention on/off."),
        click.option("--mmap/--no-mmap", "mmap", default=None,
                     help="Memory-map the weights (default: read them in; lower peak memory on CPU)."),
        click.option("-v", "--verbose", is_flag=True, help="Show llama.cpp's own log."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def sampling_options(f):
    opts = [
        click.option("--strategy", default="auto", show_default=True,
                     help="auto | se | sd | standard | single (single:N picks member N)."),
        click.option("--gamma", default=None, help="Proposal length: one int, or one per member (e.g. 8,1)."),
        click.option("--lookup", type=click.IntRange(min=0), default=None,
                     help="se: free prompt-lookup drafts per round (0 = off; auto decides by default)."),
        click.option("-n", "--n-predict", "max_tokens", type=int, default=128, show_default=True,
                     help="Maximum tokens to generate."),
        click.option("--temp", "temperature", type=float, default=1.0, show_default=True,
                     help="Temperature (0 = greedy)."),
        click.option("--top-k", type=int, default=0, show_default=True),
        click.option("--top-p", type=float, default=1.0, show_default=True),
        click.option("--min-p", type=float, default=0.0, show_default=True),
        click.option("--seed", type=int, default=None, help="Seed (same seed + settings = same output)."),
        click.option("--stop", multiple=True, help="Stop string (repeatable)."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


SAMPLING_KEYS = ("max_tokens", "temperature", "top_k", "top_p", "min_p", "seed", "strategy", "gamma", "stop",
                 "lookup")


def sampling_kwargs(opts: dict) -> dict:
    kw = {k: opts[k] for k in SAMPLING_KEYS if k in opts}
    kw["stop"] = list(kw.get("stop") or ()) or None
    return kw


def load_ensemble(opts: dict, *, progress: bool = True):
    """Build the Ensemble a command asked for (-m files or -p preset)."""
    from .ensemble import Ensemble

    models, preset = opts.get("models") or (), opts.get("preset")
    if models and preset:
        raise InvalidParameterError("give either -m files or -p PRESET, not both")
    member_kw = {k: opts[k] for k in ("n_ctx", "n_threads", "n_threads_batch", "n_gpu_layers", "flash_attn", "mmap")
                 if opts.get(k) is not None}
    member_kw["verbose"] = bool(opts.get("verbose"))
    ens_kw = {}
    if opts.get("mode"):
        ens_kw["method"] = opts["mode"]
    weights = _floats(opts.get("weights"), "--weights")
    if weights is not None:
        ens_kw["weights"] = weights
    for k in ("mu", "alpha"):
        if opts.get(k) is not None:
            ens_kw[k] = opts[k]
    if models:
        return Ensemble.from_paths(list(models), **ens_kw, **member_kw)
    from .presets import DEFAULT_PRESET
    return Ensemble.from_preset(preset or DEFAULT_PRESET, progress=progress, **ens_kw, **member_kw)


def pass_opts(f):
    """Collect all click params into one dict argument `opts`."""
    @functools.wraps(f)
    def wrapper(**kw):
        return f(kw)
    return wrapper
