"""NV24_INT4: 2:4 sparsity whose kept values are asymmetric int4.

The kept values of NV24 (N, Kp/2) are quantized like INT4, in groups of `group` consecutive kept values
(covering 2 * group input positions). Stored: `qvalues` (N, Kp/4) uint8, `scales` and `mins`
(N, Kp / (2 * group)) in the activation dtype, and NV24's `meta`. K is padded to a multiple of 2 * group.
"""
import torch

from . import int4, nv24


def pack(weight: torch.Tensor, mask: torch.Tensor, dtype: torch.dtype, group: int):
    int4.check_group(group)
    kp = -(-weight.shape[1] // (2 * group)) * (2 * group)
    values, meta = nv24.compress(nv24.pad_k(weight, kp), nv24.pad_k(mask, kp))
    q, scales, mins = int4.quantize(values, group, dtype)
    return int4.pack_nibbles(q), scales, mins, meta


def unpack(tensors, shape, group):
    qvalues, scales, mins, meta = tensors
    values = int4.dequantize(int4.unpack_nibbles(qvalues), scales, mins, group)
    return nv24.expand(values, meta, shape).to(scales.dtype)
