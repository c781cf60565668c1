"""keep_freed_memory: after it, a large tensor freed and allocated again reuses mapped pages (no page faults)."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

SCRIPT = """
import resource, sys, torch
from redraft.host_memory import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
x = torch.ones(16 << 20)  # 64 MB: above glibc's largest mmap threshold
faults = []
for _ in range(12):  # a step's temporaries: made, used, freed
    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    y = x * 2.0
    z = y + 1.0
    del y, z
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
print(sum(faults[4:]))  # after a few steps
"""


@pytest.mark.skipif(not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
                    reason="glibc malloc tuning")
def test_freed_memory_stays_mapped():
    def last_faults(mode: str) -> int:
        out = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, check=True)
        return int(out.stdout.split()[-1])

    pages = 8 * 2 * (64 << 20) // 4096  # 8 steps of two 64 MB temporaries
    default = last_faults("default")
    assert default > pages // 2  # every temporary is page-faulted in afresh
    # kept: mostly none (glibc's aligned allocations fragment the heap now and then: at most one temporary in 8
    # steps was faulted in again over 10 trials, i.e. <= 6%)
    assert last_faults("keep") < default // 4


ENGINE_SCRIPT = """
import resource, sys, torch
from redraft.decoding import DecodeConfig, Engine
from redraft.decoding.testing import TINY_MASK_ID, tiny_model
torch.set_num_threads(1)
model = tiny_model(seed=0)
keep = {"on": True, "off": False, "default": None}[sys.argv[1]]
engine = Engine(model, max_batch_size=8, mask_id=TINY_MASK_ID, keep_host_memory=keep)
cfg = DecodeConfig(tau_mask=0.9, tau_edit=0.5, block_length=32, max_new_tokens=256, mask_id=TINY_MASK_ID)
for i in range(8):
    engine.add_request([5 + i, 7, 9], cfg)
faults = []
while engine.has_work():
    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    engine.step()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
print(sum(faults[len(faults) // 2:]))  # the second half of the steps
"""


@pytest.mark.skipif(not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
                    reason="glibc malloc tuning")
def test_engine_on_cpu_keeps_freed_memory_by_default():
    """A CPU engine's steps stop page-faulting their temporaries in (keep_host_memory=None: on for CPU models)."""
    def faults(mode: str) -> int:
        out = subprocess.run([sys.executable, "-c", ENGINE_SCRIPT, mode], capture_output=True, text=True, check=True)
        return int(out.stdout.split()[-1])

    off = faults("off")
    assert off > 1000  # glibc's defaults: every step's large temporaries are faulted in afresh
    assert faults("default") < off // 4 and faults("on") < off // 4


def test_engine_keep_host_memory_must_be_a_bool():
    from redraft.decoding import Engine
    from redraft.decoding.testing import TINY_MASK_ID, tiny_model

    with pytest.raises(ValueError, match="keep_host_memory must be True, False or None, got 'yes'"):
        Engine(tiny_model(seed=0), mask_id=TINY_MASK_ID, keep_host_memory="yes")
