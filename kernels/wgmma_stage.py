"""What both HYBRID wgmma kernels (`hybrid_wgmma`, `hybrid_wgmma_ws`) share: the tiles a program owns."""
from triton.experimental import gluon
from triton.experimental.gluon import language as gl

from .int4_mma import step_range


@gluon.jit
def program_tiles(M, K, grid_cols, BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr, BLOCK_K: gl.constexpr,
                  SPLIT_K: gl.constexpr):
    """(pid_m, pid_n, the program's first row inside its tile row, the tile row's first grid entry, its slice's
    first and end tile columns) of program (pid, pid_k): BLOCK_N rows of one tile row (the tile is BLOCK_K
    square), BLOCK_M x rows, the pid_k-th of SPLIT_K slices of the tile columns."""
    grid_m = gl.cdiv(M, BLOCK_M)
    pid_m, pid_n = gl.program_id(0) % grid_m, gl.program_id(0) // grid_m
    tile_row = pid_n * BLOCK_N // BLOCK_K
    first_row = pid_n * BLOCK_N - tile_row * BLOCK_K
    entries = tile_row * grid_cols
    first, end = step_range(K, BLOCK_K, SPLIT_K)
    return pid_m, pid_n, first_row, entries, first, end

