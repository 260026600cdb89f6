"""Shared fixtures: tiny random-weight GGUF models built in seconds, and fake members."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session", autouse=True)
def _private_calibration(tmp_path_factory):
    """Calibration curves measured by tests, and bridge tables built by them, stay out of the user's cache."""
    mp = pytest.MonkeyPatch()
    mp.setenv("EDGE_SPECENS_CALIBRATION", str(tmp_path_factory.mktemp("calib") / "calibration.json"))
    mp.setenv("EDGE_SPECENS_BRIDGE_CACHE", str(tmp_path_factory.mktemp("bridges")))
    yield
    mp.undo()


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("tiny_models")


@pytest.fixture(scope="session")
def tiny_models(tiny_dir) -> dict[str, Path]:
    """small/big/third share one vocabulary; padded has extra rows; other differs at one id."""
    from gguf_factory import SIMPLE_CHAT_TEMPLATE, write_tiny_llama  # gguf only where a test builds models

    return {
        "small": write_tiny_llama(tiny_dir / "small.gguf", seed=1, n_embd=32, chat_template=SIMPLE_CHAT_TEMPLATE),
        "big": write_tiny_llama(
            tiny_dir / "big.gguf", seed=2, n_embd=64, n_layer=3, chat_template=SIMPLE_CHAT_TEMPLATE
        ),
        "third": write_tiny_llama(tiny_dir / "third.gguf", seed=3, n_embd=48, n_head=4),
        "padded": write_tiny_llama(tiny_dir / "padded.gguf", seed=4, extra_pad_tokens=13),
        "other": write_tiny_llama(tiny_dir / "other.gguf", seed=5, vocab_variant="other"),
    }


@pytest.fixture(scope="session")
def duo(tiny_models):
    from edge_specens import Ensemble

    ens = Ensemble.from_paths([tiny_models["small"], tiny_models["big"]], n_ctx=512, kv_f32=True)
    yield ens
    ens.close()


@pytest.fixture(scope="session")
def pulled() -> list[str]:
    """The real qwen2.5-coder-duo, fetched through our own `models pull`: its file paths."""
    import subprocess
    import sys

    r = subprocess.run(
        [sys.executable, "-m", "edge_specens", "models", "pull", "qwen2.5-coder-duo", "--quiet"],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert r.returncode == 0, r.stderr
    return r.stdout.split()
