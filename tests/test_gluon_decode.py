"""The explicit-layout decode kernels (`kernels.gluon_decode`): the layouts the host picks, and the sm_90 code of
the INT4 kernel, compiled on the CPU (no GPU needed; their results are checked on the GPU by test_kernels)."""
import collections
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sparc.errors import SparcError
from sparc.kernels import gluon_decode

BLOCKS = [(4, 2048, 128, 4), (16, 1024, 128, 4), (16, 2048, 128, 8), (32, 512, 64, 4), (8, 128, 32, 8),
          (4, 128, 128, 4), (16, 256, 32, 4)]


@pytest.mark.parametrize("block_n, block_k, group, num_warps", BLOCKS)
def test_int4_layout_covers_the_block_once(block_n, block_k, group, num_warps):
    chosen = gluon_decode.int4_layout(block_n, block_k, group, num_warps)
    words, groups = group // 8, block_k // group
    assert chosen.TN * chosen.TG * (words // chosen.V) == 32
    assert chosen.WN * chosen.WG == chosen.num_warps <= num_warps
    assert chosen.R * chosen.TN * chosen.WN == block_n
    assert groups % (chosen.TG * chosen.WG) == 0
    assert words % chosen.V == 0


def test_int4_layout_prefers_16_byte_loads_and_all_warps():
    assert gluon_decode.int4_layout(16, 1024, 128, 4) == gluon_decode.Int4Layout(4, 4, 4, 1, 8, 4, 1)


def test_int4_layout_refuses_a_block_too_small_to_split():
    with pytest.raises(SparcError, match="block_n"):
        gluon_decode.int4_layout(1, 128, 128, 4)


def loop_of_compiled_int4(block_n: int, block_k: int, group: int, num_warps: int) -> collections.Counter:
    """Instruction counts of the K loop of the INT4 kernel compiled for sm_90, in a process without
    TRITON_INTERPRET (under it Triton's own reduction helpers are interpreted functions)."""
    env = {name: value for name, value in os.environ.items() if name != "TRITON_INTERPRET"}
    script = Path(__file__).with_name("gluon_sass.py")
    done = subprocess.run([sys.executable, str(script), *map(str, (block_n, block_k, group, num_warps))], env=env,
                          capture_output=True, text=True, check=True)
    return collections.Counter(json.loads(done.stdout.splitlines()[-1]))


@pytest.mark.parametrize("block_n, block_k, group, num_warps, most_per_word", [
    (16, 1024, 128, 4, 45), (4, 2048, 128, 4, 55), (8, 256, 32, 4, 85)])
def test_int4_loop_stays_in_registers(block_n, block_k, group, num_warps, most_per_word):
    """The K loop has no shared memory and no barrier (`decode.int4_decode_kernel` has both), loads 4 words at a
    time with 16-byte loads where the layout gives a thread 4, and stays under its count of instructions a
    32-bit word (about 10% above what triton 3.7 compiles; fewer rows a thread convert x for fewer words)."""
    ops = loop_of_compiled_int4(block_n, block_k, group, num_warps)
    layout = gluon_decode.int4_layout(block_n, block_k, group, num_warps)
    opcodes = {op.split(".")[0] for op in ops}
    assert opcodes and not {"BAR", "STS", "LDS"} & opcodes
    if layout.V == 4:
        assert ops["LDG.E.128"] + ops["LDG.E.128.CONSTANT"] > 0
    assert sum(ops.values()) * 32 * layout.num_warps / (block_n * block_k // 8) < most_per_word
