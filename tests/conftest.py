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


@pytest.fixture(autouse=True)
def serving_slots_released(request):
    """After every test that used a server (a `ServerProcess` or a TestClient of a redraft app): once its requests
    are over, no slot stays in flight (issue 14)."""
    yield
    servers = []
    for value in request.node.funcargs.values():
        if type(value).__name__ == "ServerProcess" and value.process.poll() is None:
            servers.append(value.base_url)
        elif type(value).__name__ == "TestClient" and hasattr(getattr(value.app, "state", None), "server"):
            servers.append(value)
    if servers:
        from redraft.serving.testing import wait_idle

        for server in servers:
            assert wait_idle(server, timeout=30) == 0, f"in-flight slots leaked after {request.node.name}"
