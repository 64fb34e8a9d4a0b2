"""DENSE: the (masked) weight as is, in the activation dtype.

Kernel piece: `dense_block` loads a (BLOCK_N x BLOCK_K) block of a row-major weight whose rows are `width`
values long, one contiguous run of BLOCK_K values (2 * BLOCK_K bytes in bf16) per row, in the stored dtype
on the GPU (fp32 under the interpreter).
"""
import torch
import triton
import triton.language as tl


def pack(weight: torch.Tensor, mask: torch.Tensor, dtype: torch.dtype, group: int):
    return ((weight * mask).to(dtype).contiguous(),)


def unpack(tensors, shape, group):
    return tensors[0]


@triton.jit
def dense_block(values_ptr, base, rows, row_ok, width, k0, BLOCK_K: tl.constexpr, UPCAST: tl.constexpr = True):
    """Weight block (rows, k0 .. k0 + BLOCK_K), fp32 when UPCAST, else as stored (straight to the tensor
    cores); row r starts at element base + r * width."""
    offs_k = k0 + tl.arange(0, BLOCK_K)
    ptrs = values_ptr + (base + rows.to(tl.int64) * width)[:, None] + offs_k[None, :]
    w = tl.load(ptrs, mask=row_ok[:, None] & (offs_k < width)[None, :], other=0.0)
    if UPCAST:
        w = w.to(tl.float32)
    return w
