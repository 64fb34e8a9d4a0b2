"""The backend end to end on tiny models: compiled output equals sparc.reference for every shape."""
import pytest
import torch
from torch._dynamo.utils import counters

import sparc
from models import calibration, example_input, logits, make

TOLERANCE = {torch.float32: 1e-5, torch.bfloat16: 1e-2}
SHAPES = [(batch, seq) for batch in (1, 3) for seq in (1, 7, 33)]


def relative_error(actual, expected):
    """||actual - expected|| / ||expected|| over the whole output."""
    return ((actual.float() - expected.float()).norm() / expected.float().norm()).item()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("name", ["llama", "qwen2", "gpt2", "mlp"])
def test_compiled_matches_reference(name, dtype):
    model = make(name, dtype)
    plan = sparc.plan(model, calibration(name, dtype=dtype), method="wanda", pattern="2:4")
    assert plan.layers and all(layer.describe() == "nv24" for layer in plan.layers.values())
    reference = sparc.reference(model, plan)
    torch._dynamo.reset()
    counters.clear()
    compiled = torch.compile(model, backend="sparc", options={"plan": plan}, dynamic=True)
    with torch.no_grad():
        for batch, seq in SHAPES:
            x = example_input(name, batch, seq, dtype)
            torch._dynamo.decorators.mark_unbacked(x, 0)  # one graph for every batch size, 1 included
            expected = logits(reference(x))
            dense = logits(model(x))
            actual = logits(compiled(x))
            assert actual.shape == expected.shape
            assert relative_error(actual, expected) <= TOLERANCE[dtype], (batch, seq)
            assert relative_error(dense, expected) > 10 * TOLERANCE[dtype], "the plan changed nothing"
    assert 1 <= counters["stats"]["unique_graphs"] <= 2


def test_conv1d_weights_are_planned_in_their_logical_layout():
    model = make("gpt2")
    plan = sparc.plan(model, calibration("gpt2"), method="magnitude", pattern="2:4")
    layer = plan.layers["transformer.h.0.mlp.c_fc.weight"]
    assert layer.transposed and layer.shape == (256, 64)
    # 2:4 runs along the input dim of the stored (in x out) Conv1D weight, i.e. down its columns
    kept = layer.mask.reshape(256, 16, 4).sum(-1)
    assert (kept == 2).all()


def test_no_options_behaves_like_inductor():
    model = make("llama")
    x = example_input("llama", 2, 9)
    with torch.no_grad():
        expected = logits(model(x))
        actual = logits(torch.compile(model, backend="sparc")(x))
    assert relative_error(actual, expected) <= 1e-5


def test_plan_at_compile_time_from_options():
    model = make("llama")
    batches = calibration("llama")
    compiled = torch.compile(model, backend="sparc", options={"method": "wanda", "sparsity": 0.5,
                                                             "calibration": batches})
    plan = sparc.plan(model, batches, method="wanda", sparsity=0.5)
    reference = sparc.reference(model, plan)
    with torch.no_grad():
        x = example_input("llama", 2, 16)
        assert relative_error(logits(compiled(x)), logits(reference(x))) <= 1e-5


def test_inner_eager_skips_inductor(tmp_path):
    model = make("mlp")
    plan = sparc.plan(model, calibration("mlp"), method="wanda", pattern="unstructured", sparsity=0.3)
    compiled = torch.compile(model, backend="sparc", options={"plan": plan, "inner": "eager", "dump": str(tmp_path)})
    x = example_input("mlp", 3, 5)
    with torch.no_grad():
        assert relative_error(compiled(x), sparc.reference(model, plan)(x)) <= 1e-6
    graph = (tmp_path / "graph_0.py").read_text()
    assert graph.count("torch.ops.sparc.linear.default") == 2
    table = (tmp_path / "layers_0.txt").read_text()
    assert "up.weight" in table and "30.0%" in table


def test_int4_and_nv24_int4_layers_match_reference():
    for pattern in ("unstructured", "2:4"):
        model = make("qwen2")
        plan = sparc.plan(model, calibration("qwen2"), method="wanda", pattern=pattern, sparsity=0.5, bits=4,
                          group=32)
        compiled = torch.compile(model, backend="sparc", options={"plan": plan})
        x = example_input("qwen2", 2, 11)
        with torch.no_grad():
            assert relative_error(logits(compiled(x)), logits(sparc.reference(model, plan)(x))) <= 1e-5
        torch._dynamo.reset()


def test_sparc_linear_passes_opcheck():
    import sparc.codegen.ops  # noqa: F401
    from sparc.kernels import pack

    weight = torch.randn(24, 40)
    mask = torch.rand(24, 40) > 0.5
    from sparc.planners.masks import mask_2of4
    cases = [("dense", mask, 0), ("nv24", mask_2of4(torch.rand(24, 40)), 0), ("int4", mask, 32),
             ("nv24_int4", mask_2of4(torch.rand(24, 40)), 32), ("zero", torch.zeros(24, 40, dtype=torch.bool), 0)]
    for layout, layer_mask, group in cases:
        packed = pack(layout, weight, layer_mask, torch.float32, group)
        x = torch.randn(5, 40)
        torch.library.opcheck(torch.ops.sparc.linear.default,
                              (x, list(packed.tensors), torch.randn(24), layout, packed.dims))


def test_backend_is_found_through_the_entry_point_and_import_registers_nothing():
    from importlib.metadata import entry_points

    (entry,) = [e for e in entry_points(group="torch_dynamo_backends") if e.name == "sparc"]
    assert entry.value == "sparc.backend:sparc_backend"
    script = (
        "import torch, sparc\n"
        "from torch._dynamo.backends import registry\n"
        "assert 'sparc' not in registry._COMPILER_FNS, 'import sparc registered the backend'\n"
        "f = torch.compile(lambda x: x * 2, backend='sparc')\n"
        "assert torch.equal(f(torch.ones(3)), torch.full((3,), 2.0))\n"
        "assert registry._COMPILER_FNS['sparc'].__name__ == 'sparc_backend'\n"
    )
    import subprocess
    import sys
    subprocess.run([sys.executable, "-c", script], check=True)


@pytest.mark.parametrize("method,settings,layouts", [
    ("gqsa", dict(bits=4, group=32, sparsity=0.5), {"bsr_int4"}),
    ("patch", dict(sparsity=0.3, tile=64), {"hybrid", "nv24"}),
    ("cfsp", dict(sparsity=0.3, tile=64), {"dense"}),
    ("sparsegpt", dict(pattern="2:4"), {"nv24"}),
])
def test_every_planner_compiles_to_its_layouts_and_matches_reference(method, settings, layouts, tmp_path):
    model = make("llama")
    plan = sparc.plan(model, calibration("llama"), method=method, **settings)
    compiled = torch.compile(model, backend="sparc", options={"plan": plan, "dump": str(tmp_path)})
    x = example_input("llama", 2, 11)
    with torch.no_grad():
        assert relative_error(logits(compiled(x)), logits(sparc.reference(model, plan)(x))) <= 1e-5
    table = (tmp_path / "layers_0.txt").read_text()
    assert all(f" {layout} " in table for layout in layouts), table


@pytest.mark.parametrize("prior", ["sparsegpt", "wanda"])
def test_refined_patch_plan_meets_its_sparsity_and_matches_reference(prior):
    model = make("llama")
    weights = {name: p.detach().clone() for name, p in model.named_parameters()}
    plan = sparc.plan(model, calibration("llama"), method="patch", sparsity=0.3, tile=64, refine_steps=3,
                      refine_lr=0.05, prior=prior)
    assert all(torch.equal(p, weights[name]) for name, p in model.named_parameters())  # the model is not changed
    kept = sum(int(layer.mask.sum()) for layer in plan.layers.values())
    total = sum(layer.mask.numel() for layer in plan.layers.values())
    assert abs(1 - kept / total - 0.3) <= 0.05  # tiny model: one 64 x 64 tile is 2-6% of a layer
    assert {layer.provenance["stage"] for layer in plan.layers.values()} == {"refined"}
    assert all((layer.weight is not None) == (prior == "sparsegpt") for layer in plan.layers.values())
    compiled = torch.compile(model, backend="sparc", options={"plan": plan})
    x = example_input("llama", 1, 9)
    with torch.no_grad():
        assert relative_error(logits(compiled(x)), logits(sparc.reference(model, plan)(x))) <= 1e-5


def test_planning_one_model_many_times_stays_under_the_recompile_limit():
    model = make("mlp")
    batches = calibration("mlp")
    plans = [sparc.plan(model, batches, method="magnitude", pattern="2:4") for _ in range(10)]  # the limit is 8
    assert all(plan.layers.keys() == plans[0].layers.keys() for plan in plans)
