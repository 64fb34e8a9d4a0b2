"""BSR_INT4 (GQSA): block-sparse rows of int4 blocks; blocks whose mask is all False are not stored.

The weight is cut into (block_n x group) blocks: block_n output rows (a power of two, 16 to 128, default 16)
by one quantization group of inputs (32, 64 or 128). A block is kept when any of its mask is True; a kept block
stores the asymmetric int4 of the masked weight, one scale and minimum per block row (a block row is exactly
one quantization group). Layout, dims = [N, K, group, block_n], NB = ceil(N / block_n) block rows:
    row_ptr  int32 (NB + 1,)                 kept blocks of block row r are row_ptr[r] .. row_ptr[r + 1] - 1
    col_idx  int16 (nnz,)                    block column of each kept block (int32 past 32767 columns)
    qweight  uint8 (nnz, block_n, group/2)   two values a byte, even input index in the low nibble
    scales, mins (nnz, block_n)              in the activation dtype, w = q * scale + min
N is padded to block_n and K to the group at pack time (padding weights are zero) and cropped by unpack.

Kernel guide. `bsr_int4_kernel`: program (pid_mn, pid_k) owns the (BLOCK_M x block_n) output tile of one block
row and, with SPLIT_K slices, every SPLIT_K-th kept block of that row, from the row pointers read on the device
(the launch grid depends only on M, N, K). Per kept block it loads the block's column index, the x block
(BLOCK_M x group) at that column, and the block's block_n * group / 2 bytes, scales and minimums (contiguous),
dequantizes with `int4.int4_block` and accumulates x @ w.T (or w @ x.T, SWAP). Dropped blocks cost nothing, so
work and bytes scale with the kept fraction. Program order, epilogue and split-K reduction as in `tiling`; the
launch configuration is a `hybrid.Config` (its BLOCK_M, warps, stages, swap, grouping). M == 1 runs
`decode.bsr_int4_decode_kernel`, and M = 2 to 16 on the GPU `int4_mma.bsr_int4_mma_kernel`.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from sparc.errors import SparcError

from . import int4
from .int4 import int4_block
from .tiling import accumulate, choose_tiling, launch, load_x_tile, store_result, tile_position

BLOCK_NS = (16, 32, 64, 128)


def check_block_n(block_n: int) -> None:
    if block_n not in BLOCK_NS:
        raise SparcError(f"bsr_int4 block_n must be one of {BLOCK_NS}, got {block_n}")


def block_grid(t: torch.Tensor, block_n: int, group: int) -> torch.Tensor:
    """(NB, KB, block_n, group) blocks of `t` zero-padded to whole blocks."""
    nb, kb = -(-t.shape[0] // block_n), -(-t.shape[1] // group)
    padded = torch.nn.functional.pad(t, (0, kb * group - t.shape[1], 0, nb * block_n - t.shape[0]))
    return padded.reshape(nb, block_n, kb, group).transpose(1, 2)


def pack(weight: torch.Tensor, mask: torch.Tensor, dtype: torch.dtype, group: int, block_n: int = 16,
         scales=None, mins=None):
    """`scales`/`mins` (N, ceil(K / group)), when given, fix each group's quantization grid."""
    int4.check_group(group)
    check_block_n(block_n)
    kept = block_grid(mask, block_n, group).any(dim=-1).any(dim=-1)
    blocks = block_grid(weight * mask, block_n, group)[kept]
    if scales is not None:
        scales, mins = (block_grid(t.float(), block_n, 1)[kept].reshape(-1, 1) for t in (scales, mins))
    q, scales, mins = int4.quantize(blocks.reshape(-1, group), group, dtype, scales, mins)
    row_ptr = torch.nn.functional.pad(kept.sum(dim=1).cumsum(0), (1, 0)).to(torch.int32)
    index_dtype = torch.int16 if kept.shape[1] <= torch.iinfo(torch.int16).max else torch.int32
    col_idx = kept.nonzero()[:, 1].to(index_dtype)
    nnz = blocks.shape[0]
    return (row_ptr, col_idx, int4.pack_nibbles(q).reshape(nnz, block_n, group // 2),
            scales.reshape(nnz, block_n), mins.reshape(nnz, block_n))


def unpack(tensors, shape, group, block_n):
    row_ptr, col_idx, qweight, scales, mins = tensors
    nnz = qweight.shape[0]
    q = int4.unpack_nibbles(qweight.reshape(nnz * block_n, group // 2))
    values = int4.dequantize(q, scales.reshape(-1, 1), mins.reshape(-1, 1), group).reshape(nnz, block_n, group)
    nb, kb = -(-shape[0] // block_n), -(-shape[1] // group)
    blocks = torch.zeros(nb, kb, block_n, group, device=qweight.device)
    block_rows = torch.repeat_interleave(torch.arange(nb, device=qweight.device), row_ptr.diff().long())
    blocks[block_rows, col_idx.long()] = values
    weight = blocks.transpose(1, 2).reshape(nb * block_n, kb * group)
    return weight[: shape[0], : shape[1]].to(scales.dtype)


@triton.jit
def bsr_int4_kernel(x_ptr, out_ptr, bias_ptr, row_ptr, col_ptr, q_ptr, scales_ptr, mins_ptr,
                    M, N, K, stride_xm, stride_xk,
                    HAS_BIAS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                    SPLIT_K: tl.constexpr, USE_DOT: tl.constexpr, DOT_DTYPE: tl.constexpr,
                    PRECISION: tl.constexpr, ROUND_BF16: tl.constexpr, UPCAST: tl.constexpr, SWAP: tl.constexpr,
                    GROUP_M: tl.constexpr):
    """BLOCK_N = block_n and BLOCK_K = group: one stored block per iteration."""
    pid_m, block_row = tile_position(tl.program_id(0), M, N, BLOCK_M, BLOCK_N, GROUP_M)
    pid_k = tl.program_id(1)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rows = tl.arange(0, BLOCK_N)
    first = tl.load(row_ptr + block_row)
    last = tl.load(row_ptr + block_row + 1)
    if SWAP:
        acc = tl.zeros((BLOCK_N, BLOCK_M), tl.float32)
    else:
        acc = tl.zeros((BLOCK_M, BLOCK_N), tl.float32)
    for i in range(pid_k, last - first, SPLIT_K):
        block = first + i
        col = tl.load(col_ptr + block).to(tl.int32)
        w = int4_block(q_ptr, scales_ptr, mins_ptr, block.to(tl.int64) * (BLOCK_N * BLOCK_K), rows, rows < BLOCK_N,
                       BLOCK_K, 0, BLOCK_N, BLOCK_K, BLOCK_K)
        x = load_x_tile(x_ptr, offs_m, col * BLOCK_K + tl.arange(0, BLOCK_K), M, K, stride_xm, stride_xk, UPCAST)
        acc = accumulate(acc, x, w, USE_DOT, DOT_DTYPE, PRECISION, ROUND_BF16, SWAP)
    if SWAP:
        acc = tl.trans(acc)
    offs_n = block_row * BLOCK_N + rows
    store_result(acc, out_ptr, bias_ptr, offs_m, offs_n, M, N, pid_k, HAS_BIAS, SPLIT_K, ROUND_BF16)


def matmul(x2d: torch.Tensor, layout: str, tensors, dims, bias, config=None, split_k=None, out=None,
           partials=None):
    """x2d (M, K) @ W.T + bias for a BSR_INT4 weight; `config` a `hybrid.Config` (its block_n and block_k are
    the layout's)."""
    from .hybrid import default_config, fit_shared, launch_options

    n, k, group, block_n = dims
    config = config or default_config(x2d.shape[0])
    if split_k is None and config.split_k:
        split_k = config.split_k
    block_m, stages = fit_shared(config, config.block_m, group, x2d)
    tiling = choose_tiling(x2d, n, triton.cdiv(k, group), block_n, group, split_k, block_m if x2d.is_cuda else None)
    return launch(bsr_int4_kernel, x2d, n, k, bias, tiling, tensors, (),
                  launch_options(x2d, tiling.block_m, config, stages), out, partials)
