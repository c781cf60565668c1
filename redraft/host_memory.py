"""Keep freed host memory inside a CPU training or decoding process (glibc `mallopt`), so each step reuses mapped
pages.

PyTorch on CPU has no caching allocator: every tensor is a fresh `malloc`. glibc serves large requests (above a
threshold of at most 32 MB) with a new `mmap` and gives small freed ones back to the kernel (heap trimming), so the
large per-step tensors of training (logits [B, L, V], the attention inputs, their gradients) are page-faulted in
again on every micro-batch; on a 2-core VM that was ~40% of a v2 step (a [32, 256, 6144] bf16 -> float32 copy: 11 ms
into mapped memory, ~280 ms into fresh pages). With `M_MMAP_MAX = 0` every request comes from the heap, and with
the trim threshold at its maximum freed memory stays mapped for the next step: after the first steps the process
stops faulting (~800k -> ~2k minor faults per step), at the cost of never shrinking its resident size, which a
training run does not need. This is the same trade as PyTorch's CUDA caching allocator, or as preloading jemalloc or
tcmalloc (`torch.backends.xeon.run_cpu --enable-jemalloc`), which works too and is left to the user.

Decoding on CPU has the same pattern at smaller size (each step's logits [B, E, V] in float32, the policy's
temporaries, the layers' activations): `Engine(keep_host_memory=None)` applies it for a model on CPU.
"""

from __future__ import annotations

import ctypes
import platform
import sys

M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_MAX = -4
TRIM_NEVER = 2**31 - 1  # the largest value mallopt accepts (an int)


def keep_freed_memory(top_pad_bytes: int = 256 << 20) -> bool:
    """Make this process's glibc malloc keep freed memory mapped (no mmap'd chunks, no heap trimming, heap grown in
    `top_pad_bytes` steps). Returns True when applied; False (nothing changed) off Linux or glibc."""
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    mallopt = libc.mallopt
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return all(mallopt(param, value) == 1 for param, value in
               ((M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, TRIM_NEVER), (M_TOP_PAD, min(top_pad_bytes, TRIM_NEVER))))
