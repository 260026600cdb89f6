"""`edge-specens bench`: the command around bench.run_bench (the runner never sees click)."""

from __future__ import annotations

import time
from pathlib import Path

import click

from ..bench import WORKLOADS, markdown_table, parse_settings, run_bench, workload_prompts
from .options import load_ensemble, long_job_errors, model_options, pass_opts


@click.command("bench")
@model_options
@click.option(
    "--workload",
    type=click.Choice(sorted(WORKLOADS)),
    default="humaneval",
    show_default=True,
    help="Prompts to run: HumanEval problems (code) or everyday chat requests (not code).",
)
@click.option(
    "--prompts",
    "n_prompts",
    type=click.IntRange(min=1),
    default=None,
    help="How many of the workload's prompts to run, from its first (humaneval has 164, chat 20; "
    "default 20; --quick: 2).",
)
@click.option(
    "-n",
    "--n-predict",
    "--max-tokens",
    "max_tokens",
    type=click.IntRange(min=1),
    default=None,
    help="Tokens per generation (default 128; --quick: 48).",
)
@click.option(
    "--out",
    "out",
    type=click.Path(file_okay=False),
    default="bench_out",
    show_default=True,
    help="Folder for bench.json, bench.md, bench.png.",
)
@click.option(
    "--quick",
    is_flag=True,
    help="A short run (2 prompts x 48 tokens, WE at T=0 and T=1) of strategies single, standard, "
    "standard+par, sd 3/5, se [1,1]/[5,1]/[8,1]/[16,1], se [1,1] + lookup, se [4,1] + lookup + par, auto.",
)
@click.option(
    "--settings",
    default=None,
    help="Subset of we-t0,we-t0.8,we-t1,cd-t0,cd-t1 (or we, cd, all). Default all (--quick: we-t0,we-t1).",
)
@click.option(
    "--strategies",
    default=None,
    help="Subset, e.g. 'single,standard,sd:3,se:8,1,se:1,1+lookup,standard+par,auto'; bare sd/se/single = "
    "its whole grid; se gammas are written proposer first; +lookup[N] adds prompt-lookup drafts to se; "
    "+par runs the members side by side, each on its own thread (without it a strategy runs them one "
    "after the other; auto decides). Default: single, standard, standard+par, the sd and se grids, "
    "se:4,1+par, se:4,1+lookup+par, auto. standard (one after the other) always runs: speed-ups are "
    "relative to it.",
)
@click.option(
    "-s",
    "--seed",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Base seed: prompt i uses seed+i for every strategy.",
)
@click.option("--no-progress", "no_progress", is_flag=True, help="Hide the progress bar.")
@pass_opts
def bench(opts):
    """Benchmark every strategy on HumanEval or chat prompts; writes bench.json, bench.md and bench.png."""
    with long_job_errors("interrupted; nothing written"):
        parse_settings(opts["settings"])  # fail on a typo or too many prompts before loading models
        if opts["n_prompts"] is not None:
            workload_prompts(opts["workload"], opts["n_prompts"])
        if opts.get("cache_ram") is None:  # every prompt differs: saved prompts would only add RSS
            opts["cache_ram"] = 0
        ens = load_ensemble(opts, progress=not opts["no_progress"])
        try:
            t0 = time.perf_counter()
            report = run_bench(
                ens,
                n_prompts=opts["n_prompts"],
                workload=opts["workload"],
                max_tokens=opts["max_tokens"],
                settings=opts["settings"],
                strategies=opts["strategies"],
                seed=opts["seed"],
                out=opts["out"],
                quick=opts["quick"],
                progress=not opts["no_progress"],
            )
        finally:
            ens.close()
    click.echo(markdown_table(report))
    out = Path(opts["out"])
    click.echo(
        f"\n{time.perf_counter() - t0:.0f} s; wrote {out / 'bench.json'}, {out / 'bench.md'}, {out / 'bench.png'}",
        err=True,
    )
