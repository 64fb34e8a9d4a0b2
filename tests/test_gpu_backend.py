"""On the GPU the backend runs the Triton kernels: a tiny Llama planned with NV24, INT4, BSR_INT4 and hybrid
layers, compiled, matches sparc.reference there."""
import pytest
import torch

import sparc
from models import calibration, example_input, logits, make
from sparc.ir import Plan

pytestmark = pytest.mark.gpu


def merged(plans_by_part: dict[str, Plan]) -> Plan:
    """One plan whose layers come from the plan named by a substring of the layer name."""
    layers, signature = {}, {}
    for part, plan in plans_by_part.items():
        for name, layer in plan.layers.items():
            if part in name:
                layers[name], signature[name] = layer, plan.signature[name]
    return Plan(layers, signature, "mixed")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=["bf16", "fp32"])
def test_tiny_llama_with_nv24_int4_bsr_and_hybrid_layers_matches_reference(dtype):
    model = make("llama", dtype).cuda()
    batches = [x.cuda() for x in calibration("llama")]
    plan = merged({
        "self_attn.q_proj": sparc.plan(model, batches, method="wanda", pattern="2:4"),
        "self_attn.k_proj": sparc.plan(model, batches, method="dense", bits=4, group=32),
        "self_attn.v_proj": sparc.plan(model, batches, method="gqsa", bits=4, group=32, sparsity=0.5),
        "self_attn.o_proj": sparc.plan(model, batches, method="patch", sparsity=0.3, tile=64),
        "mlp": sparc.plan(model, batches, method="wanda", pattern="2:4", bits=4, group=32),
    })
    layouts = {layer.describe() for layer in plan.layers.values()}
    assert {"nv24", "int4 g32", "nv24_int4 g32"} <= layouts
    reference = sparc.reference(model, plan)
    compiled = torch.compile(model, backend="sparc", options={"plan": plan})
    for batch, seq in ((1, 1), (3, 17), (2, 64)):
        x = example_input("llama", batch, seq).cuda()
        with torch.no_grad():
            actual, expected = logits(compiled(x)).float(), logits(reference(x)).float()
        error = ((actual - expected).norm() / expected.norm()).item()
        assert error <= (1e-2 if dtype == torch.bfloat16 else 1e-5), (batch, seq, error)
