"""`edge-specens eval BENCHMARK`: answer quality (pass@1) of member and ensemble configurations."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from ..errors import InvalidParameterError
from .options import load_ensemble, long_job_errors, model_options, pass_opts


@click.command("eval")
@click.argument("benchmark")
@model_options
@click.option("--limit", type=int, default=None, help="Only the first N problems (default: all 164).")
@click.option(
    "--strategy",
    default="auto",
    show_default=True,
    help="How each configuration decodes (exact: any strategy gives r's answer).",
)
@click.option(
    "--temp",
    "temperature",
    type=float,
    default=0.0,
    show_default=True,
    help="Sampling temperature (0 = greedy). 0 here, unlike generate's 0.8 (llama.cpp's): pass@1 then scores "
    "each configuration's most likely answer, the same on every run, not one random draw.",
)
@click.option(
    "-n",
    "--n-predict",
    "--max-tokens",
    "max_tokens",
    type=click.IntRange(min=1),
    default=512,
    show_default=True,
    help="Reply length cap (as generate's -n).",
)
@click.option(
    "--configs",
    default=None,
    help="Configurations, e.g. single:0,single:1,we:0.5,we:0.7,cd:0.1,cd:0.3 (single:K = member K alone; we:W = "
    "weight W on the largest member; cd:MU[:ALPHA] = the largest contrasted with the smallest, alpha 0.1; "
    "@STRATEGY overrides --strategy). Default: the ensemble as loaded.",
)
@click.option("-s", "--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Seed (T > 0).")
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    default="eval_out",
    show_default=True,
    help="Where eval.json/.md/.png go; a run there resumes.",
)
@click.option("--no-progress", "no_progress", is_flag=True, help="Hide the progress bar.")
@click.option(
    "--unsafe-no-sandbox",
    "unsafe_no_sandbox",
    is_flag=True,
    help="Run the model-written code without the OS sandbox (bubblewrap), e.g. where it cannot be installed: "
    "only rlimits and an audit hook stand between it and your files. The report says so.",
)
@pass_opts
def evaluate(opts):
    """Run BENCHMARK (humaneval) for each configuration in a sandbox; report pass@1 and speed."""
    from ..quality import humaneval
    from ..quality.sandbox import require_sandbox

    interrupted = f"interrupted; finished problems are kept in {opts['out']}/eval.json (run again to resume)"
    with long_job_errors(interrupted):
        if opts["benchmark"] not in humaneval.BENCHMARKS:
            raise InvalidParameterError(f"unknown benchmark {opts['benchmark']!r}; the benchmarks are: humaneval")
        if opts["limit"] is not None and not 1 <= opts["limit"] <= 164:
            raise InvalidParameterError(f"--limit must be 1 to 164, got {opts['limit']}")
        if opts["configs"] is not None:
            humaneval.parse_configs(opts["configs"], max(2, len(opts.get("models") or ()) or 2))  # typos before loading
        require_sandbox(opts["unsafe_no_sandbox"])  # no sandbox: one line and exit 2, before loading
        if opts["unsafe_no_sandbox"]:
            click.echo("warning: --unsafe-no-sandbox: model-written code runs without the OS sandbox", err=True)
        if opts.get("cache_ram") is None:  # every prompt differs: saved prompts would only add RSS
            opts["cache_ram"] = 0
        ens = load_ensemble(opts, progress=not opts["no_progress"])
        try:
            if opts["configs"]:
                configs = humaneval.parse_configs(opts["configs"], len(ens.members))
            else:
                spec = ens.spec
                key = (
                    f"cd:{spec.mu:g}:{spec.alpha:g}"
                    if spec.method == "cd"
                    else "we:" + "+".join(f"{w:g}" for w in spec.weights)
                )
                configs = (
                    humaneval.parse_configs(key, len(ens.members))
                    if len(ens.members) > 1
                    else humaneval.parse_configs("single:0", 1)
                )
            bar = _progress_bar(not opts["no_progress"])
            t0 = time.perf_counter()
            data = humaneval.run(
                ens,
                configs,
                limit=opts["limit"],
                strategy=opts["strategy"],
                temperature=opts["temperature"],
                max_tokens=opts["max_tokens"],
                out=Path(opts["out"]),
                seed=opts["seed"],
                progress=bar,
                unsafe=opts["unsafe_no_sandbox"],
            )
            humaneval.write_report(data, Path(opts["out"]))
        finally:
            ens.close()
    click.echo((Path(opts["out"]) / "eval.md").read_text())
    click.echo(f"{time.perf_counter() - t0:.0f} s; wrote {opts['out']}/eval.json, eval.md, eval.png", err=True)


def _progress_bar(enabled: bool):
    """tqdm on a terminal (problems done of all); nothing for scripts."""
    if not enabled or not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    bar = tqdm(total=0, unit="problem", file=sys.stderr)

    def update(what: str, done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.set_description(what)
        bar.refresh()
        if what == "done":
            bar.close()

    return update
