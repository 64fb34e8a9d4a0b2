"""NV24_INT4: 2:4 sparsity whose kept values are asymmetric int4.

The kept values of NV24 (N, Kp/2) are quantized like INT4, in groups of `group` consecutive kept values
(covering 2 * group input positions). Stored: `qvalues` (N, Kp/4) uint8, `scales` and `mins`
(N, Kp / (2 * group)) in the activation dtype, and NV24's `meta`. K is padded to a multiple of 2 * group.

Kernel piece: `nv24_int4_block` rebuilds a (BLOCK_N x BLOCK_K) weight block from BLOCK_K / 4 bytes per row
(one byte holds both kept values of a group of 4), BLOCK_K / 8 meta bytes and the scale and minimum of each
quantization group (loaded once and broadcast): both nibbles are dequantized in fp32 and placed by
`nv24.expand_24`.
"""
import torch
import triton
import triton.language as tl

from . import int4, nv24
from .int4 import nibbles_as_float
from .nv24 import expand_24, load_nibbles


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


@triton.jit
def nv24_int4_block(q_ptr, scales_ptr, mins_ptr, meta_ptr, base, rows, row_ok, width, k0, BLOCK_N: tl.constexpr,
                    BLOCK_K: tl.constexpr, GROUP: tl.constexpr):
    """Weight block (rows, k0 .. k0 + BLOCK_K) as fp32 of rows `width` inputs long (padded to 2 * GROUP) that
    start at input position base + r * padded width; BLOCK_K a multiple of 2 * GROUP. Read as
    (BLOCK_N, BLOCK_K / SUB, SUB / 4) bytes, SUB = 2 * GROUP inputs per quantization group, one scale and
    minimum per group loaded once and broadcast."""
    SUB: tl.constexpr = 2 * GROUP  # input positions covered by one quantization group of kept values
    S: tl.constexpr = BLOCK_K // SUB
    span = SUB
    padded = tl.cdiv(width, span) * span
    row_start = base + rows.to(tl.int64) * padded
    sub_k = k0 + SUB * tl.arange(0, S)
    ok = row_ok[:, None] & (sub_k < padded)[None, :]
    groups = (row_start // span)[:, None] + (sub_k // span)[None, :]
    scales = tl.load(scales_ptr + groups, mask=ok, other=0.0).to(tl.float32)[:, :, None]
    mins = tl.load(mins_ptr + groups, mask=ok, other=0.0).to(tl.float32)[:, :, None]
    ptrs = q_ptr + ((row_start // 4)[:, None] + (sub_k // 4)[None, :])[:, :, None] + tl.arange(0, SUB // 4)
    q0, q1 = nibbles_as_float(tl.load(ptrs, mask=ok[:, :, None], other=0))
    v0 = tl.reshape(q0 * scales + mins, (BLOCK_N, BLOCK_K // 4))
    v1 = tl.reshape(q1 * scales + mins, (BLOCK_N, BLOCK_K // 4))
    nibbles = load_nibbles(meta_ptr, row_start, row_ok, padded, k0, BLOCK_N, BLOCK_K)
    return expand_24(v0, v1, nibbles, BLOCK_N, BLOCK_K)
