#!/usr/bin/env bash
# `make bench`: burn vs PyTorch phrase-encoding throughput, measured in the same run on the same texts
# with the same thread count. Prints tokens/s, the ratio burn/PyTorch and the achieved GFLOP/s.
set -euo pipefail
cd "$(dirname "$0")/.."
threads="${BENCH_THREADS:-$(nproc)}"
infra/python.sh -c 'import torch, transformers' 2>/dev/null || infra/python.sh -m pip install -q torch transformers
out="$(mktemp -d)"
# Built for the whole workspace, as `make test` builds: a `-p` build resolves other features for arrow and
# lance and rebuilds them.
# BENCH_PROFILE=release measures the build farm workers run (`cargo build --release`); the default is the
# dev profile that `make demo` and the tests use.
profile="${BENCH_PROFILE:-debug}"
cargo build -q --workspace --examples $([ "$profile" = release ] && echo --release)
RAYON_NUM_THREADS="$threads" "${CARGO_TARGET_DIR:-target}/$profile/examples/bench_encode" | tee "$out/burn.jsonl"
infra/python.sh scripts/bench_torch.py "$threads" | tee "$out/torch.jsonl"
python3 - "$out/burn.jsonl" "$out/torch.jsonl" "$threads" <<'PY'
import json, sys
burn = {r["batch"]: r for r in map(json.loads, open(sys.argv[1]))}
torch = {r["batch"]: r for r in map(json.loads, open(sys.argv[2]))}
r0 = next(iter(burn.values()))
d, layers, ff = r0["hidden"], r0["layers"], 4 * r0["hidden"]
# Matmul FLOPs per token of a BERT layer: QKV and output (4 d^2), feed-forward (2 d ff), times 2 for
# multiply-add; attention scores and mixing add 4 * seq * d, taken at the mean paragraph length.
seq = r0["tokens"] / r0["paragraphs"]
flops = layers * 2 * (4 * d * d + 2 * d * ff + 2 * seq * d)
print(f"\n{'batch':>5} {'burn tok/s':>11} {'torch tok/s':>12} {'burn/torch':>10} {'burn GFLOP/s':>12} {'torch GFLOP/s':>13}  ({sys.argv[3]} threads)")
for b in sorted(burn):
    bt, tt = burn[b]["tokens_per_s"], torch[b]["tokens_per_s"]
    print(f"{b:>5} {bt:>11.0f} {tt:>12.0f} {bt / tt:>10.2f} {bt * flops / 1e9:>12.1f} {tt * flops / 1e9:>13.1f}")
PY
