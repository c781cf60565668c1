"""Block-scaled FP8 GEMMs on CUDA (Hopper or newer), DeepSeek-V3 style: activations quantized per 1 x 128 group on
the fly, weights per 128 x 128 block, one `torch.nn.functional.scaled_mm` call (cuBLASLt / CUTLASS blockwise
kernels, torch >= 2.9). Everywhere else the callers dequantize the weight instead (see `modules.py`).

`FastPath` decides once per module whether the kernel can run (device, shapes, block size) and falls back for good,
with a warning naming the error, if the first call fails (a torch build or driver without the blockwise kernels).
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import Tensor

from .blocks import FP8_DTYPE, FP8_MAX


def fp8_gemm_available(device: torch.device) -> bool:
    """CUDA device of compute capability 9.0 or newer, and a torch with blockwise `scaled_mm`."""
    return (device.type == "cuda" and hasattr(F, "scaled_mm") and hasattr(F, "ScalingType")
            and torch.cuda.get_device_capability(device) >= (9, 0))


def quantize_activation(x: Tensor, group: int = 128) -> tuple[Tensor, Tensor]:
    """x [M, K] -> (float8_e4m3fn [M, K], float32 scale [M, ceil(K/group)]) with x ~= q * scale per 1 x group."""
    m, k = x.shape
    kb = -(-k // group)
    xf = x.float()
    if kb * group != k:
        xf = F.pad(xf, (0, kb * group - k))
    blocks = xf.view(m, kb, group)
    scale = blocks.abs().amax(-1).clamp_min(1e-12) / FP8_MAX
    q = (blocks / scale[..., None]).clamp_(-FP8_MAX, FP8_MAX).to(FP8_DTYPE).view(m, kb * group)[:, :k]
    return q.contiguous(), scale


def block_fp8_linear(x: Tensor, weight: Tensor, scale_inv: Tensor, bias: Tensor | None = None,
                     out_dtype: torch.dtype = torch.bfloat16) -> Tensor:
    """x [..., K] @ dequant(weight [N, K], scale_inv [ceil(N/128), ceil(K/128)]).T with an FP8 tensor-core GEMM."""
    lead = x.shape[:-1]
    xq, xs = quantize_activation(x.reshape(-1, x.shape[-1]))
    st = F.ScalingType
    out = F.scaled_mm(xq, weight.t(), xs.t().contiguous().t(), st.BlockWise1x128, scale_inv.t(), st.BlockWise128x128,
                      bias=bias, output_dtype=out_dtype)
    return out.view(*lead, weight.shape[0])


class FastPath:
    """Whether a module's FP8 GEMMs run on tensor cores: decided on the first CUDA call, off after a failure."""

    def __init__(self) -> None:
        self.enabled: bool | None = None  # None: not decided yet; set False to force the dequantizing path

    def usable(self, x: Tensor, block: tuple[int, int], shapes: list[tuple[int, int]]) -> bool:
        if self.enabled is False or not x.is_cuda:
            return False
        if torch.cuda.is_current_stream_capturing() and self.enabled is None:
            return False  # never probe inside a graph capture
        ok = (block == (128, 128) and fp8_gemm_available(x.device)
              and all(n % 16 == 0 and k % 16 == 0 for n, k in shapes))
        if not ok:
            self.enabled = False
        return ok

    def run(self, fn, fallback):
        """fn() on the FP8 kernel; on the first failure, warn once, disable, and return fallback()."""
        if self.enabled:
            return fn()
        if self.enabled is False:
            return fallback()
        try:
            out = fn()
        except RuntimeError as e:
            warnings.warn(f"redraft FP8: blockwise scaled_mm unavailable here ({e}); dequantizing to the activation "
                          "dtype instead", RuntimeWarning, stacklevel=3)
            self.enabled = False
            return fallback()
        self.enabled = True
        return out
