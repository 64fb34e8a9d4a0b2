"""Placeholder sources as Dynamo names them, read by `sparc.graph`: a module traced through its own forward and
one traced through a (*args, **kwargs) wrapper whose first argument is the module (transformers' decorators)."""
import pytest
import torch

from sparc.graph import frame_locals, qualified_name


@pytest.mark.parametrize("root", ["L['self']", "L['args'][0]"])
def test_parameters_are_named_by_their_module_path(root):
    source = f"{root}._modules['model']._modules['layers']._modules['0']._parameters['weight']"
    assert qualified_name(source) == "model.layers.0.weight"


@pytest.mark.parametrize("source", ["L['args'][0]", "L['args'][1]", "L['args'][0].size()[1]", "L['input_ids']"])
def test_user_inputs_are_not_module_state(source):
    assert qualified_name(source) is None


def test_a_wrapped_frame_finds_the_batch_after_the_module():
    batch = torch.randn(2, 3)
    plain = frame_locals(batch, ["L['args'][0]"])
    wrapped = frame_locals(batch, ["L['args'][1]"], module_first=True)
    assert eval("L['args'][0]", {"L": plain}) is batch
    assert eval("L['args'][1]", {"L": wrapped}) is batch
    assert eval("L['kwargs']['x']", {"L": frame_locals({"x": batch}, [], module_first=True)}) is batch
