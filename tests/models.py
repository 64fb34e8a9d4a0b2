"""Tiny random models from transformers configs, and calibration batches for them."""
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

VOCAB = 96


def tiny_llama():
    return LlamaForCausalLM(LlamaConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128))


def tiny_qwen2():
    return Qwen2ForCausalLM(Qwen2Config(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128))


def tiny_gpt2():
    return GPT2LMHeadModel(GPT2Config(vocab_size=VOCAB, n_embd=64, n_layer=2, n_head=4, n_positions=128,
                                      bos_token_id=0, eos_token_id=0))


class MLP(torch.nn.Module):
    def __init__(self, width=48, hidden=100):
        super().__init__()
        self.up = torch.nn.Linear(width, hidden)
        self.down = torch.nn.Linear(hidden, width, bias=False)

    def forward(self, x):
        return self.down(torch.nn.functional.gelu(self.up(x))) + x


MODELS = {"llama": tiny_llama, "qwen2": tiny_qwen2, "gpt2": tiny_gpt2, "mlp": MLP}


def make(name: str, dtype=torch.float32, seed=0):
    torch.manual_seed(seed)
    return MODELS[name]().to(dtype).eval()


def example_input(name: str, batch: int, seq: int, dtype=torch.float32):
    if name == "mlp":
        return torch.randn(batch, seq, 48, dtype=dtype)
    return torch.randint(0, VOCAB, (batch, seq))


def calibration(name: str, count=3, dtype=torch.float32):
    return [example_input(name, 2, 16, dtype) for _ in range(count)]


def logits(output):
    return output if isinstance(output, torch.Tensor) else output.logits
