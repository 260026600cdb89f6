"""GGUF files on Hugging Face, from huggingface_hub's cache or the hub (fetch.py does the fetching).

The cache is laid out as huggingface_hub lays it out: ``<cache>/models--<owner>--<repo>/`` holds
``refs/<branch>`` (a commit hash) and ``snapshots/<commit>/<file>`` (links into ``blobs/``). The cache
folder is huggingface_hub's own ``constants.HF_HUB_CACHE`` ($HF_HUB_CACHE, else $HF_HOME/hub, else
~/.cache/huggingface/hub), so what is listed here is what `hf_hub_download` finds.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from .reference import HubFile


def resolve(hub: HubFile) -> Path:
    """The local file of `hub`: the cache's copy, else downloaded into the cache (FetchError if neither)."""
    from ..fetch import resolve_model  # the hub, its cache, HF_HUB_OFFLINE: one place (fetch.py)

    return resolve_model(str(hub))


def cache_dir() -> Path:
    """huggingface_hub's cache folder (its constants, so it agrees with hf_hub_download)."""
    try:
        from huggingface_hub import constants

        return Path(constants.HF_HUB_CACHE)
    except ImportError:
        home = os.environ.get("HF_HOME") or os.path.join(
            os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "huggingface"
        )
        return Path(os.environ.get("HF_HUB_CACHE") or os.path.join(home, "hub"))


def found() -> Iterator[tuple[str, Path | None, str | None]]:
    """("owner/repo:file.gguf", path, None) for every GGUF in the cache: the files of the snapshot
    `refs/main` points at first, then any other snapshot's files that are not in it."""
    root = cache_dir()
    if not root.is_dir():
        return
    for repo_dir in sorted(root.glob("models--*--*")):
        owner, _, repo = repo_dir.name[len("models--") :].partition("--")
        try:
            main = (repo_dir / "refs" / "main").read_text().strip()
        except OSError:
            main = ""
        snapshots = sorted((repo_dir / "snapshots").glob("*"), key=lambda s: s.name != main)
        seen: set[str] = set()
        for snap in snapshots:
            for file in sorted(snap.rglob("*.gguf")):
                rel = file.relative_to(snap).as_posix()
                if rel in seen or not file.is_file():  # a link whose blob is gone is not a model
                    continue
                seen.add(rel)
                yield f"{owner}/{repo}:{rel}", file, None
