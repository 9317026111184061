"""PyTorch `transformers` throughput on the same texts as workers/examples/bench_encode.rs (same model, same
truncation, same order by length, same batch sizes, same thread count). Prints one JSON line per batch size."""
import json
import os
import sys
import time

import torch
from transformers import AutoTokenizer, BertModel

os.environ["HF_HUB_OFFLINE"] = "1"
threads = int(sys.argv[1]) if len(sys.argv) > 1 else os.cpu_count()
torch.set_num_threads(threads)
root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
model_dir = os.environ.get(
    "PHRASESWEEP_MODEL_DIR", os.path.expanduser("~/.cache/phrasesweep/models/all-MiniLM-L6-v2"))
corpus = os.environ.get("BENCH_CORPUS", os.path.join(root, "..", "shared", "data", "corpus", "dev.docs.jsonl"))
n = int(os.environ.get("BENCH_PARAGRAPHS", "1000"))
device = os.environ.get("BENCH_DEVICE", "cpu")

paragraphs = []
with open(corpus, encoding="utf-8") as f:
    for line in f:
        for p in json.loads(line)["paragraphs"]:
            if len(paragraphs) < n:
                paragraphs.append(p)
tok = AutoTokenizer.from_pretrained(model_dir)
model = BertModel.from_pretrained(model_dir, add_pooling_layer=False).eval().to(device)
torch.set_grad_enabled(False)
lengths = [len(ids) for ids in tok(paragraphs, truncation=True, max_length=256)["input_ids"]]
tokens = sum(lengths)
# In order of length, as the Rust side and the encode job batch them.
paragraphs = [p for _, p in sorted(zip(lengths, paragraphs), key=lambda x: x[0])]

for batch in (1, 8, 32):
    enc = [tok(paragraphs[i:i + batch], padding=True, truncation=True, max_length=256, return_tensors="pt")
           for i in range(0, len(paragraphs), batch)]
    model(**{k: v.to(device) for k, v in enc[0].items()})
    if device != "cpu":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for e in enc:
        model(**{k: v.to(device) for k, v in e.items()}).last_hidden_state.cpu()
    secs = time.perf_counter() - start
    print(json.dumps({"framework": f"pytorch-{torch.__version__}-{device}", "batch": batch, "paragraphs": len(paragraphs),
                      "tokens": tokens, "seconds": secs, "tokens_per_s": tokens / secs, "threads": threads}))
