"""Reference hidden states of all-MiniLM-L6-v2 from PyTorch `transformers`, for the burn parity test.

Writes tests/fixtures/minilm-parity.safetensors: for a padded batch of short, non-ASCII and medium texts
and for one 512-token text, the token ids, the attention mask and the last hidden states (the 512-token
text keeps every 8th position to stay small). Run: python3 scripts/parity_fixture.py
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
from transformers import AutoTokenizer, BertModel

os.environ["HF_HUB_OFFLINE"] = "1"
root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
model_dir = os.environ.get(
    "PHRASESWEEP_MODEL_DIR", os.path.expanduser("~/.cache/phrasesweep/models/all-MiniLM-L6-v2"))
corpus = os.path.join(root, "..", "shared", "data", "corpus", "dev.docs.jsonl")

with open(corpus, encoding="utf-8") as f:
    doc = json.loads(f.readline())
long_text = " ".join(doc["paragraphs"] * 20)

batch = [
    "who wrote the novel war and peace?",
    "Zürich, São Paulo and Kraków — 東京 is big. Ñandú, naïve café!",
    doc["paragraphs"][0][:400],
]

tok = AutoTokenizer.from_pretrained(model_dir)
model = BertModel.from_pretrained(model_dir, add_pooling_layer=False).eval()
torch.set_grad_enabled(False)

a = tok(batch, padding=True, truncation=True, max_length=512, return_tensors="pt")
a_hidden = model(**a).last_hidden_state
b = tok([long_text], truncation=True, max_length=512, return_tensors="pt")
assert b["input_ids"].shape[1] == 512
b_hidden = model(**b).last_hidden_state[:, ::8, :]

out = os.path.join(root, "tests", "fixtures", "minilm-parity.safetensors")
save_file(
    {
        "a_ids": a["input_ids"].contiguous(),
        "a_mask": a["attention_mask"].contiguous(),
        "a_hidden": a_hidden.contiguous(),
        "b_ids": b["input_ids"].contiguous(),
        "b_hidden": b_hidden.contiguous(),
    },
    out,
    metadata={"batch": json.dumps(batch), "long_text": long_text,
              "torch": torch.__version__, "transformers": transformers.__version__},
)
print(f"wrote {out}")
