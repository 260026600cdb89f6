"""`edge-specens models list --all`: the GGUF files Ollama, LM Studio and the Hugging Face cache hold,
one line each, from their headers alone (sources/catalog.py reads them; nothing is copied)."""

from __future__ import annotations

import click

from ..sources import found_models, stores


def _size(n: int) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e9 else f"{n / 1e6:.0f} MB" if n >= 1e6 else f"{n / 1e3:.0f} kB"


def print_stores() -> int:
    """Print every store and its models; the number of models that can be used."""
    usable = 0
    for store in stores():
        click.echo("")
        if not store.folders:
            click.echo(f"{store.name}: none here (looked in {store.default})")
            continue
        click.echo(f"{store.name}: {', '.join(str(f) for f in store.folders)}")
        models = list(found_models(store.name))
        if not models:
            click.echo("  (no GGUF models)")
            continue
        width = max(len(m.reference) for m in models)
        for m in models:
            if m.problem is not None:
                click.echo(f"  {m.reference:<{width}}  cannot be used: {m.problem}")
                continue
            usable += 1
            vocab = f"{m.tokenizer} {m.n_vocab:,}"
            template = "chat template" if m.chat_template else "no chat template"
            click.echo(f"  {m.reference:<{width}}  {m.architecture:<10} {_size(m.size):>8}  {vocab:<14} {template}")
    if usable:
        click.echo("\nload one with -m REFERENCE (as listed); the files are used where they are")
    return usable
