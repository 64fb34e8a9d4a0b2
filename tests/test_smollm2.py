"""SmolLM2-135M end to end on the CPU: the compiled planned model equals sparc.reference, and its perplexity
equals that of the same plan applied eagerly."""
import sys
from pathlib import Path

import pytest
import torch

import sparc

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from common import perplexity, smollm2_with_kjv  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smollm2():
    model, _, calibration, held_out = smollm2_with_kjv((4, 128), (2, 256))
    return model, calibration, held_out


def relative_error(actual, expected):
    return ((actual.float() - expected.float()).norm() / expected.float().norm()).item()


def test_wanda_24_compiled_matches_reference_and_eager_perplexity(smollm2):
    model, calibration, held_out = smollm2
    plan = sparc.plan(model, calibration, method="wanda", sparsity=0.5, pattern="2:4")
    assert len(plan.layers) == 30 * 7 and "lm_head.weight" not in plan.layers
    reference = sparc.reference(model, plan)
    compiled = torch.compile(model, backend="sparc", options={"plan": plan})
    with torch.no_grad():
        actual, expected = compiled(held_out[0]).logits, reference(held_out[0]).logits
    assert relative_error(actual, expected) <= 1e-5
    compiled_ppl, eager_ppl, dense_ppl = perplexity(compiled, held_out), perplexity(reference, held_out), \
        perplexity(model, held_out)
    assert abs(compiled_ppl / eager_ppl - 1) <= 0.01
    assert compiled_ppl > dense_ppl * 1.5  # 2:4 pruning without weight updates costs a lot on a 135M model


def test_patch_planned_while_compiling_matches_reference(smollm2):
    model, calibration, held_out = smollm2
    options = {"method": "patch", "sparsity": 0.35, "calibration": calibration}
    compiled = torch.compile(model, backend="sparc", options=options)
    with torch.no_grad():
        actual = compiled(calibration[0]).logits  # the first call traces at the calibration shape and plans
    plan = sparc.plan(model, calibration, method="patch", sparsity=0.35)
    assert {layer.describe() for layer in plan.layers.values()} == {"dense+nv24"}
    achieved = 1 - sum(l.mask.sum().item() for l in plan.layers.values()) / sum(l.mask.numel() for l in plan.layers.values())
    assert abs(achieved - 0.35) <= 0.01
    with torch.no_grad():
        expected = sparc.reference(model, plan)(calibration[0]).logits
    assert relative_error(actual, expected) <= 1e-5
