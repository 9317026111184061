"""A tiny checkpoint in the layout of DensePhrases' published ones, with PyTorch's outputs, for the
loader's parity test (`workers/tests/densephrases.rs`).

DensePhrases (`densephrases/encoder.py`) keeps three BERTs and the filter head in one state dict:
`phrase_encoder.*`, `query_start_encoder.*`, `query_end_encoder.*` and `filter_linear.*` (hidden → 2:
start and end logits). This writes such a `pytorch_model.bin` with random weights (a vocabulary of 128,
2 layers of 32), its `config.json`, and `expected.safetensors`: token ids, attention masks, the phrase
encoder's last hidden states, the filter logits, and q_start / q_end (the `[CLS]` outputs of the two
query BERTs). Run: python3 scripts/densephrases_fixture.py
"""
import json
import os
import subprocess
import sys

try:
    import torch
    import transformers  # noqa: F401
except ImportError:
    subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", "torch", "transformers"])
    import torch

from safetensors.torch import save_file
from transformers import BertConfig, BertModel

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
out = os.path.join(root, "tests", "fixtures", "densephrases-tiny")
os.makedirs(out, exist_ok=True)
torch.manual_seed(0)
torch.set_grad_enabled(False)

config = BertConfig(vocab_size=128, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                    intermediate_size=64, max_position_embeddings=64, type_vocab_size=2, hidden_act="gelu")
encoders = {name: BertModel(config).eval() for name in ["phrase_encoder", "query_start_encoder", "query_end_encoder"]}
for model in encoders.values():
    # Wider than BERT's 0.02, so every layer changes the states visibly.
    for p in model.parameters():
        p.normal_(0.0, 0.2)
filter_linear = torch.nn.Linear(32, 2)
state = {f"{name}.{k}": v for name, model in encoders.items() for k, v in model.state_dict().items()}
state.update({f"filter_linear.{k}": v for k, v in filter_linear.state_dict().items()})
torch.save(state, os.path.join(out, "pytorch_model.bin"))
with open(os.path.join(out, "config.json"), "w") as f:
    json.dump({**config.to_diff_dict(), "architectures": ["DensePhrases"]}, f, indent=1)

# A padded batch: paragraph rows (two segments) for the phrase encoder, question rows for the queries.
ids = torch.tensor([[2, 17, 40, 99, 3, 5, 6, 77, 120, 3], [2, 9, 3, 11, 12, 3, 0, 0, 0, 0]])
mask = (ids != 0).long()
types = torch.tensor([[0, 0, 0, 0, 0, 1, 1, 1, 1, 1], [0, 0, 0, 1, 1, 1, 0, 0, 0, 0]])
hidden = encoders["phrase_encoder"](input_ids=ids, attention_mask=mask, token_type_ids=types).last_hidden_state
filter_logits = filter_linear(hidden)
q_ids = torch.tensor([[2, 44, 45, 46, 3], [2, 101, 3, 0, 0]])
q_mask = (q_ids != 0).long()
q_start = encoders["query_start_encoder"](input_ids=q_ids, attention_mask=q_mask).last_hidden_state[:, 0]
q_end = encoders["query_end_encoder"](input_ids=q_ids, attention_mask=q_mask).last_hidden_state[:, 0]
save_file(
    {"ids": ids, "mask": mask, "types": types, "hidden": hidden.contiguous(), "filter": filter_logits.contiguous(),
     "q_ids": q_ids, "q_mask": q_mask, "q_start": q_start.contiguous(), "q_end": q_end.contiguous()},
    os.path.join(out, "expected.safetensors"),
    metadata={"torch": torch.__version__, "transformers": transformers.__version__},
)
print(f"wrote {out}")
