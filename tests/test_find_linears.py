"""find_linears recognises every spelling of a linear layer, on Dynamo, aten and symbolically traced graphs."""
import torch
import torch.fx

from models import calibration, make
from sparc.passes.find_linears import find_linears
from sparc.pipeline import capture_graph


def sites(gm, example_inputs):
    return {node.meta["sparc"].name: node.meta["sparc"] for node in find_linears(gm, example_inputs)}


def test_dynamo_graph_of_llama_names_every_projection():
    model = make("llama")
    gm, example_inputs = capture_graph(model, calibration("llama")[0])
    found = sites(gm, example_inputs)
    expected = {f"model.layers.{i}.{part}.weight" for i in range(2)
                for part in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                             "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")} | {"lm_head.weight"}
    assert set(found) == expected
    assert found["model.layers.0.mlp.up_proj.weight"].weight is model.model.layers[0].mlp.up_proj.weight


def test_gpt2_conv1d_addmm_is_a_transposed_linear_with_bias():
    model = make("gpt2")
    gm, example_inputs = capture_graph(model, calibration("gpt2")[0])
    site = sites(gm, example_inputs)["transformer.h.1.attn.c_attn.weight"]
    assert site.transposed and site.bias is not None and site.logical_weight.shape == (192, 64)


class Spellings(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a = torch.nn.Linear(8, 8)
        self.b = torch.nn.Parameter(torch.randn(8, 6))  # stored in x out
        self.c = torch.nn.Parameter(torch.randn(5, 6))

    def forward(self, x):
        h = self.a(x)
        h = torch.mm(h, self.b)
        return torch.nn.functional.linear(h, self.c)


def test_symbolically_traced_module_with_call_module_mm_and_get_attr():
    gm = torch.fx.symbolic_trace(Spellings())
    found = sites(gm, [])
    assert set(found) == {"a.weight", "b", "c"}
    assert found["b"].transposed and not found["c"].transposed and not found["a.weight"].transposed


def test_exported_aten_graph():
    gm = torch.export.export(Spellings(), (torch.randn(3, 8),)).module()
    ops = {node.target for node in gm.graph.nodes if node.op == "call_function"}
    assert torch.ops.aten.linear.default in ops and torch.ops.aten.mm.default in ops
    found = sites(gm, [])
    assert set(found) == {"a.weight", "b", "c"} and found["b"].transposed
