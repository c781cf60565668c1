"""Shared fixtures: the parity directory (../shared/parity) and a tiny random checkpoint with its tokenizer."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PARITY = Path(os.environ.get("REDRAFT_PARITY", REPO.parent / "shared" / "parity"))


@pytest.fixture(scope="session")
def parity_dir() -> Path:
    if not (PARITY / "cases.json").exists():
        pytest.skip(f"parity vectors not found at {PARITY} (../shared/parity beside the repo)")
    return PARITY


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A tiny random llada2_moe checkpoint (3 layers, 8 experts) with a 512-token BPE tokenizer."""
    from redraft.model.testing import make_tiny_checkpoint

    return make_tiny_checkpoint(tmp_path_factory.mktemp("tiny"), seed=0)
