"""The plan IR: exact save/load round trip, mixed tile grids, replacement weights, signatures."""
import numpy as np
import torch

import sparc
from models import calibration, make
from sparc.ir import LayerPlan, Plan, TileFormat, weight_signature


def assert_same_plan(a: Plan, b: Plan):
    assert a.method == b.method and a.settings == b.settings and a.signature == b.signature
    assert list(a.layers) == list(b.layers)
    for name in a.layers:
        x, y = a.layers[name], b.layers[name]
        assert (x.shape, x.tile, x.group, x.transposed, x.provenance) == (y.shape, y.tile, y.group, y.transposed,
                                                                          y.provenance)
        assert np.array_equal(x.formats, y.formats) and x.formats.dtype == y.formats.dtype
        assert torch.equal(x.mask, y.mask)
        assert x.block_n == y.block_n
        for field in ("weight", "scales", "mins"):
            saved, loaded = getattr(x, field), getattr(y, field)
            assert (saved is None) == (loaded is None)
            assert saved is None or (saved.dtype == loaded.dtype and torch.equal(saved, loaded))


def test_round_trip_of_a_planned_model_is_exact(tmp_path):
    plan = sparc.plan(make("gpt2"), calibration("gpt2"), method="wanda", pattern="2:4")
    plan.save(tmp_path / "plan.json")
    assert_same_plan(plan, Plan.load(tmp_path / "plan.json"))


def test_round_trip_of_mixed_tiles_quantization_and_weights(tmp_path):
    torch.manual_seed(0)
    formats = np.array([[TileFormat.DENSE, TileFormat.NV24, TileFormat.ZERO],
                        [TileFormat.INT4, TileFormat.NV24_INT4, TileFormat.DENSE]], dtype=np.uint8)
    layers = {}
    for name, dtype in (("a.weight", torch.float32), ("b.weight", torch.bfloat16)):
        layers[name] = LayerPlan((100, 130), 64, formats, torch.rand(100, 130) > 0.3, group=32, transposed=True,
                                 weight=torch.randn(100, 130).to(dtype), provenance={"method": "test", "error": 0.25},
                                 block_n=16, scales=torch.rand(100, 5).to(dtype), mins=-torch.rand(100, 5).to(dtype))
    signature = {name: weight_signature(torch.randn(130, 100)) for name in layers}
    plan = Plan(layers, signature, "test", {"sparsity": 0.3})
    plan.save(tmp_path / "p.json")
    assert_same_plan(plan, Plan.load(tmp_path / "p.json"))


def test_tile_masks_partition_the_weight():
    formats = np.array([[TileFormat.DENSE, TileFormat.NV24], [TileFormat.ZERO, TileFormat.NV24]], dtype=np.uint8)
    layer = LayerPlan((100, 70), 64, formats, torch.ones(100, 70, dtype=torch.bool))
    total = sum(layer.tile_mask(f).int() for f in TileFormat)
    assert torch.equal(total, torch.ones(100, 70, dtype=torch.int))
    assert layer.tile_mask(TileFormat.ZERO)[64:, :64].all() and not layer.tile_mask(TileFormat.ZERO)[:64].any()
    assert layer.describe() == "dense+nv24+zero"


def test_signature_tells_weights_apart():
    w = torch.randn(8, 8)
    assert weight_signature(w) == weight_signature(w.clone())
    w2 = w.clone()
    w2[0, 0] += 1e-6
    assert weight_signature(w) != weight_signature(w2)
    assert weight_signature(w) != weight_signature(w.to(torch.bfloat16))
