"""INT4: asymmetric 4-bit weights in groups along the input dim.

Each group of `group` (32, 64 or 128) consecutive input weights of a row has a scale s and a minimum m, and
w = q * s + m with q in [0, 15]. Stored: `qweight` (N, Kp/2) uint8, two values a byte (even input index in the
low nibble), `scales` and `mins` (N, Kp/group) in the activation dtype. K is padded to a multiple of the
group at pack time (padding weights are zero) and cropped by unpack.

Kernel piece: `int4_block` rebuilds a (BLOCK_N x BLOCK_K) weight block from BLOCK_K / 2 bytes per row (one
contiguous run) plus the scale and minimum of each group it covers (loaded once per group and broadcast): the
nibbles become exact fp32 by bit arithmetic (`nibbles_as_float`), are dequantized, w = q * s + m, joined back
into input order, then rounded to the activation dtype for the product.
"""
import torch
import triton
import triton.language as tl

from sparc.errors import SparcError

GROUPS = (32, 64, 128)


def check_group(group: int) -> None:
    if group not in GROUPS:
        raise SparcError(f"int4 group must be one of {GROUPS}, got {group}")


def quantize(weight: torch.Tensor, group: int, dtype: torch.dtype, scales=None, mins=None):
    """(q (N, Kp) uint8, scales, mins) for a float32 weight; scales and mins (each group's range unless given, as
    (N, Kp/group)) are rounded to `dtype` before q is chosen."""
    check_group(group)
    kp = -(-weight.shape[1] // group) * group
    groups = torch.nn.functional.pad(weight, (0, kp - weight.shape[1])).reshape(weight.shape[0], kp // group, group)
    low, high = groups.amin(-1), groups.amax(-1)
    scales = ((high - low) / 15 if scales is None else scales).to(dtype)
    mins = (low if mins is None else mins).to(dtype)
    step = torch.where(scales.float() > 0, scales.float(), torch.ones_like(low))
    q = ((groups - mins.float()[..., None]) / step[..., None]).round().clamp(0, 15)
    return q.reshape(weight.shape[0], kp).to(torch.uint8), scales.contiguous(), mins.contiguous()


def dequantize(q: torch.Tensor, scales: torch.Tensor, mins: torch.Tensor, group: int) -> torch.Tensor:
    n, k = q.shape
    groups = q.reshape(n, k // group, group).float() * scales.float()[..., None] + mins.float()[..., None]
    return groups.reshape(n, k)


def pack_nibbles(q: torch.Tensor) -> torch.Tensor:
    return (q[:, 0::2] | (q[:, 1::2] << 4)).contiguous()


def unpack_nibbles(packed: torch.Tensor) -> torch.Tensor:
    return torch.stack([packed & 0xF, packed >> 4], dim=-1).reshape(packed.shape[0], 2 * packed.shape[1])


def pack(weight: torch.Tensor, mask: torch.Tensor, dtype: torch.dtype, group: int, scales=None, mins=None):
    q, scales, mins = quantize(weight * mask, group, dtype, scales, mins)
    return pack_nibbles(q), scales, mins


def unpack(tensors, shape, group):
    qweight, scales, mins = tensors
    return dequantize(unpack_nibbles(qweight), scales, mins, group)[:, : shape[1]].to(scales.dtype)


@triton.jit
def nibbles_as_float(packed):
    """(low, high) nibbles of uint8 bytes as exact fp32, without integer-to-float instructions: q | 2^23's
    bits is the float 2^23 + q."""
    p = packed.to(tl.int32)
    low = ((p & 0xF) | 0x4B000000).to(tl.float32, bitcast=True) - 8388608.0
    high = ((p >> 4) | 0x4B000000).to(tl.float32, bitcast=True) - 8388608.0
    return low, high


@triton.jit
def int4_block(q_ptr, scales_ptr, mins_ptr, base, rows, row_ok, width, k0, BLOCK_N: tl.constexpr,
               BLOCK_K: tl.constexpr, GROUP: tl.constexpr):
    """Weight block (rows, k0 .. k0 + BLOCK_K) as fp32 of rows `width` inputs long (padded to GROUP) that start
    at input position base + r * padded width; BLOCK_K a multiple of GROUP. The block is read as
    (BLOCK_N, BLOCK_K / GROUP, GROUP / 2) bytes, so each scale and minimum is loaded once and broadcast."""
    SUB: tl.constexpr = GROUP
    S: tl.constexpr = BLOCK_K // GROUP
    padded = tl.cdiv(width, GROUP) * GROUP
    row_start = base + rows.to(tl.int64) * padded
    sub_k = k0 + SUB * tl.arange(0, S)
    ok = row_ok[:, None] & (sub_k < padded)[None, :]
    groups = (row_start // GROUP)[:, None] + (sub_k // GROUP)[None, :]
    scales = tl.load(scales_ptr + groups, mask=ok, other=0.0).to(tl.float32)[:, :, None]
    mins = tl.load(mins_ptr + groups, mask=ok, other=0.0).to(tl.float32)[:, :, None]
    ptrs = q_ptr + ((row_start // 2)[:, None] + (sub_k // 2)[None, :])[:, :, None] + tl.arange(0, SUB // 2)
    low, high = nibbles_as_float(tl.load(ptrs, mask=ok[:, :, None], other=0))
    w = tl.join(low * scales + mins, high * scales + mins)
    return tl.reshape(w, (BLOCK_N, BLOCK_K))
