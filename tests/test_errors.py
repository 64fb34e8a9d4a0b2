"""Bad input gets a clear error naming the option or layer: one test per case."""
import pytest
import torch

import sparc
from models import calibration, example_input, make
from sparc.errors import PlanMismatch, SparcError


def compile_and_call(model, options, x, grad=False):
    compiled = torch.compile(model, backend="sparc", options=options)
    with torch.set_grad_enabled(grad):
        return compiled(x)


def raised(error_type, call):
    with pytest.raises(Exception) as info:
        call()
    error = info.value
    while not isinstance(error, error_type) and getattr(error, "inner_exception", None) is not None:
        error = error.inner_exception  # torch.compile wraps backend errors in BackendCompilerFailed
    assert isinstance(error, error_type), repr(info.value)
    return str(error)


def test_unknown_option_lists_the_valid_ones():
    message = raised(SparcError, lambda: compile_and_call(make("mlp"), {"sparsty": 0.5}, example_input("mlp", 1, 3)))
    assert "sparsty" in message and "sparsity" in message and "calibration" in message


def test_unknown_method():
    message = raised(SparcError, lambda: sparc.plan(make("mlp"), calibration("mlp"), method="obs"))
    assert "'obs'" in message and "wanda" in message


@pytest.mark.parametrize("sparsity", [-0.1, 1.0, 1.5, "half"])
def test_sparsity_outside_range(sparsity):
    message = raised(SparcError, lambda: sparc.plan(make("mlp"), calibration("mlp"), method="wanda",
                                                   pattern="unstructured", sparsity=sparsity))
    assert "sparsity" in message and "[0, 1)" in message


def test_pattern_the_method_cannot_make():
    message = raised(SparcError, lambda: sparc.plan(make("mlp"), calibration("mlp"), method="dense", pattern="2:4"))
    assert "'dense'" in message and "'2:4'" in message


def test_empty_calibration():
    message = raised(SparcError, lambda: sparc.plan(make("mlp"), [], method="wanda"))
    assert "calibration" in message and "empty" in message
    model = make("mlp")
    options = {"method": "wanda", "calibration": []}
    message = raised(SparcError, lambda: compile_and_call(model, options, example_input("mlp", 2, 16)))
    assert "empty" in message


def test_nan_in_weights_names_the_layer():
    model = make("mlp")
    with torch.no_grad():
        model.down.weight[3, 5] = float("nan")
    message = raised(SparcError, lambda: sparc.plan(model, calibration("mlp"), method="magnitude"))
    assert "'down.weight'" in message and "NaN" in message


def test_inf_in_calibration_activations_names_the_layer():
    batches = calibration("mlp")
    batches[1][0, 2, 7] = float("inf")
    message = raised(SparcError, lambda: sparc.plan(make("mlp"), batches, method="wanda"))
    assert "'up.weight'" in message and "Inf" in message


def test_corrupt_plan_file(tmp_path):
    model = make("mlp")
    sparc.plan(model, calibration("mlp"), method="wanda").save(tmp_path / "plan.json")
    (tmp_path / "plan.json.npz").write_bytes(b"not a plan")
    message = raised(SparcError, lambda: sparc.Plan.load(tmp_path / "plan.json"))
    assert "plan.json.npz" in message and "corrupt" in message
    (tmp_path / "plan.json").write_text("{ truncated")
    message = raised(SparcError, lambda: sparc.Plan.load(tmp_path / "plan.json"))
    assert "plan.json" in message


def test_stale_plan_arrays_from_another_save(tmp_path):
    model = make("mlp")
    sparc.plan(model, calibration("mlp"), method="wanda").save(tmp_path / "a.json")
    sparc.plan(model, calibration("mlp"), method="magnitude").save(tmp_path / "b.json")
    (tmp_path / "a.json.npz").write_bytes((tmp_path / "b.json.npz").read_bytes())
    message = raised(SparcError, lambda: sparc.Plan.load(tmp_path / "a.json"))
    assert "stale" in message


def test_plan_for_other_weights_names_the_first_parameter():
    plan = sparc.plan(make("mlp", seed=0), calibration("mlp"), method="wanda")
    other = make("mlp", seed=1)
    message = raised(PlanMismatch, lambda: sparc.reference(other, plan))
    assert "'up.weight'" in message
    message = raised(PlanMismatch, lambda: compile_and_call(other, {"plan": plan}, example_input("mlp", 1, 3)))
    assert "'up.weight'" in message


def test_compile_with_grad_enabled_says_inference_only():
    model = make("mlp")
    plan = sparc.plan(model, calibration("mlp"), method="wanda")
    message = raised(SparcError, lambda: compile_and_call(model, {"plan": plan}, example_input("mlp", 1, 3), grad=True))
    assert "inference-only" in message and "no_grad" in message


def test_calibration_of_another_shape_than_the_traced_one():
    batches = calibration("mlp") + [example_input("mlp", 2, 9)]
    message = raised(SparcError, lambda: sparc.plan(make("mlp"), batches, method="wanda"))
    assert "(2, 9, 48)" in message and "(2, 16, 48)" in message
