"""SmolLM2-135M end to end on the CPU: the compiled planned model equals sparc.reference, and its perplexity
equals that of the same plan applied eagerly."""
import sys
from pathlib import Path

import pytest
import torch

import sparc

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from common import kjv_split, load_smollm2, perplexity, token_windows  # noqa: E402

pytestmark = pytest.mark.slow


def test_wanda_24_compiled_matches_reference_and_eager_perplexity():
    model, tokenizer = load_smollm2()
    calibration_text, held_out_text = kjv_split()
    calibration = token_windows(tokenizer, calibration_text, 128, 4)
    held_out = token_windows(tokenizer, held_out_text, 256, 2)
    plan = sparc.plan(model, calibration, method="wanda", sparsity=0.5, pattern="2:4")
    assert len(plan.layers) == 30 * 7 and "lm_head.weight" not in plan.layers
    reference = sparc.reference(model, plan)
    compiled = torch.compile(model, backend="sparc", options={"plan": plan})
    with torch.no_grad():
        actual, expected = compiled(held_out[0]).logits, reference(held_out[0]).logits
    assert ((actual - expected).norm() / expected.norm()).item() <= 1e-5
    compiled_ppl, eager_ppl, dense_ppl = perplexity(compiled, held_out), perplexity(reference, held_out), \
        perplexity(model, held_out)
    assert abs(compiled_ppl / eager_ppl - 1) <= 0.01
    assert compiled_ppl > dense_ppl * 1.5  # 2:4 pruning without weight updates costs a lot on a 135M model
