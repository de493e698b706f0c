"""Shared fixtures: no network, offline HF, fixed seeds."""

from __future__ import annotations

import os
import random
import socket

import pytest
from jaxtyping import install_import_hook

import tests.typecheck  # noqa: F401  (the hook below refers to it by name)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Every jaxtyping annotation (shape and dtype) and every other annotation in the package is
# checked at run time in the tests: the hook decorates each function and dataclass of
# neurorit_lens with beartype. It must run before anything imports neurorit_lens.
install_import_hook("neurorit_lens", "tests.typecheck.typechecker")

from tests.helpers import SHARED_DATA  # noqa: E402  (imports neurorit_lens: after the hook)


class NetworkBlocked(RuntimeError):
    pass


def _blocked(*args, **kwargs):
    raise NetworkBlocked(f"network access attempted in a test: {args!r}")


_ALLOWED_FAMILIES = {getattr(socket, "AF_UNIX", None)}


@pytest.fixture(autouse=True)
def no_network(monkeypatch, request):
    """Every test runs with outgoing connections blocked (AF_UNIX and loopback stay open
    for the distributed gloo tests, which mark themselves ``allow_loopback``)."""
    allow_loopback = request.node.get_closest_marker("allow_loopback") is not None
    real_connect = socket.socket.connect

    def guarded(self, address):
        if self.family in _ALLOWED_FAMILIES:
            return real_connect(self, address)
        if allow_loopback and isinstance(address, tuple) and str(address[0]) in ("127.0.0.1", "localhost", "::1"):
            return real_connect(self, address)
        _blocked(address)

    monkeypatch.setattr(socket.socket, "connect", guarded)
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: _blocked(*a))
    yield


@pytest.fixture(autouse=True)
def torch_threads(request):
    """Tiny-model tests run on one thread (several times faster when the 2 cores are shared);
    tests of the real model (``real_model``/``slow``) keep torch's default."""
    import torch

    if request.node.get_closest_marker("real_model") or request.node.get_closest_marker("slow"):
        yield
        return
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Under CI (``CI`` set), a ``real_data`` test that skips although the shared data folder
    exists is a failure: a missing file or a broken path must not pass as "not available"."""
    outcome = yield
    rep = outcome.get_result()
    if rep.skipped and item.get_closest_marker("real_data") and os.environ.get("CI") and SHARED_DATA.is_dir():
        reason = rep.longrepr[2] if isinstance(rep.longrepr, tuple) else rep.longrepr
        rep.outcome = "failed"
        rep.longrepr = f"real-data test skipped although {SHARED_DATA} exists (CI is set): {reason}"


@pytest.fixture
def seed():
    import numpy as np
    import torch

    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    return 0
