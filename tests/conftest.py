"""Shared fixtures: one torch thread (tiny models, 2 cores) and a real JACK server."""

import shutil
import subprocess
import time

import pytest

try:
    import torch
except ImportError:  # the device side is tested without torch too
    pass
else:
    torch.set_num_threads(1)


@pytest.fixture
def jack_server(request):
    """A real JACK server (dummy backend, 16 kHz, 128-frame periods unless the test
    parametrizes it indirectly with (rate, period)) under its own name; yields the
    name (set JACK_DEFAULT_SERVER to it)."""
    rate, period = getattr(request, "param", (16000, 128))
    binary = shutil.which("jackd")
    if binary is None:
        pytest.skip("jackd is not installed (tools/setup_system.sh installs jackd2)")
    name = f"kboost-{request.node.name[:40]}"
    proc = subprocess.Popen(
        [binary, "--no-realtime", "-n", name, "-d", "dummy", "-r", str(rate), "-p", str(period)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(1.0)
    yield name
    proc.terminate()
    proc.wait(timeout=10)
