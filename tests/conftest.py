"""Test-wide settings: Triton runs in its interpreter on CPU-only machines; kernel outputs start as NaN.

Every test starts from a fresh random seed (KDSR_TEST_SEED=N replays one), printed with the test's output so a
failure shows how to replay it.
"""

import os
import random

import pytest
import torch

if not torch.cuda.is_available():
    # Must be set before triton is imported anywhere (kdsr_kernels imports it lazily).
    os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("KDSR_POISON_OUTPUTS", "1")
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(autouse=True)
def _replayable_seed(request):
    """Seed torch / random from KDSR_TEST_SEED or a fresh draw, and print it (shown when the test fails)."""
    seed = int(os.environ.get("KDSR_TEST_SEED") or random.SystemRandom().randrange(2**31))
    torch.manual_seed(seed)
    random.seed(seed)
    print(f"random seed {seed} (replay: KDSR_TEST_SEED={seed} python -m pytest '{request.node.nodeid}')")
    yield


@pytest.fixture
def one_torch_thread():
    """Run a test with one torch thread (training tests: deterministic and cheaper on a shared machine)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
