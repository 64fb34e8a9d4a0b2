"""L2 prefetch in `hybrid_mma` (`kernels.l2_prefetch`): the sm_90 loop compiled on any machine asks for a later
tile's rows and loads the same as without it; the tuner weighs it up to 16 x rows."""
import pytest

from test_int4_mma import compiled_loop

from sparc.kernels import hybrid_mma


@pytest.mark.parametrize("has_dense, has_nv24, spans", [(1, 1, 3), (1, 0, 1), (0, 1, 2)])
def test_the_loop_asks_l2_for_a_later_tile_and_loads_as_before(has_dense, has_nv24, spans):
    """One bulk prefetch per span of the program's rows of that tile (DENSE; NV24 values and metadata); the
    only added loads are that tile's entry (its format byte and offset)."""
    config = (64, 4, 16, has_dense, has_nv24, 1, 0)
    plain, ahead = compiled_loop("mma_hybrid", *config, 0), compiled_loop("mma_hybrid", *config, 2)
    assert "UBLKPF.L2" not in plain and ahead["UBLKPF.L2"] == spans
    loads = {op: n for op, n in plain.items() if op.startswith(("LDG", "LDS"))}
    added = {"LDG.E.64": 1, "LDG.E.U8": 1}
    assert {op: n for op, n in ahead.items() if op.startswith(("LDG", "LDS"))} == {
        op: loads.get(op, 0) + added.get(op, 0) for op in set(loads) | set(added)}
    assert not {"LDL", "STL"} & {op.split(".")[0] for op in ahead}


@pytest.mark.parametrize("m", [1, 16, 64])
def test_the_tuner_weighs_the_prefetch_up_to_16_rows(m):
    assert hybrid_mma.default("hybrid", m).prefetch == 0
    distances = {config.prefetch for config in hybrid_mma.candidates("hybrid", m)}
    assert distances == ({0, 2} if m <= 16 else {0})
