"""L2 prefetch in the tensor-core kernels (`kernels.l2_prefetch`): the sm_90 loops compiled on any machine ask
for the weight of a later step and load the same as without it; the configs carry the distance."""
import pytest

from test_int4_mma import compiled_loop

from sparc.kernels import hybrid_mma, int4_mma, int4_wgmma, nv24_mma

LOADS = ("LDG", "LDS")


def loads(ops) -> dict:
    return {op: count for op, count in ops.items() if op.startswith(LOADS)}


# (kernel, its gluon_sass arguments before the distance, prefetch instruction, how many a loop, loads added)
CASES = [
    ("mma_nv24", (128, 8, 64, 0, 2, 0, 0), "CCTL.E.PF2", 2, {}),  # values and metadata, a thread each row
    ("mma_nv24", (64, 4, 16, 64, 1, 0, 0), "CCTL.E.PF2", 4, {}),  # NV24_INT4: + scales and minimums
    ("wgmma", (64, 256, 8, 128, 0), "CCTL.E.PF2", 3, {}),  # words, scales, minimums
    ("mma", (128, 128, 128, 4, 16), "CCTL.E.PF2", 3, {}),
    ("mma_bsr", (16, 128, 128, 1, 16), "UBLKPF.L2", 3, {}),  # the kept blocks are one span of each
    # a tile's rows are one span (DENSE, or NV24 values and metadata); its entry is read ahead of the loads'
    ("mma_hybrid", (64, 4, 16, 1, 1, 1, 0), "UBLKPF.L2", 3, {"LDG.E.64": 1, "LDG.E.U8": 1}),
]


@pytest.mark.parametrize("kernel, config, instruction, count, added", CASES)
def test_the_loop_asks_l2_ahead_and_loads_as_before(kernel, config, instruction, count, added):
    plain = compiled_loop(kernel, *config, 0)
    ahead = compiled_loop(kernel, *config, 4)
    assert not any(op.startswith(("CCTL", "UBLKPF")) for op in plain)
    assert ahead[instruction] == count
    assert loads(ahead) == {op: n + added.get(op, 0) for op, n in loads(plain).items()}
    assert not {"LDL", "STL"} & {op.split(".")[0] for op in ahead}


@pytest.mark.parametrize("module, layout, m", [(nv24_mma, "nv24", 64), (int4_wgmma, "int4", 64),
                                               (int4_mma, "int4", 16), (hybrid_mma, "hybrid", 16)])
def test_configs_default_to_no_prefetch_and_tuned_ones_take_a_distance(module, layout, m):
    assert module.default(layout, m).prefetch == 0
    distances = {config.prefetch for config in module.candidates(layout, m)}
    assert 0 in distances and max(distances) > 0
