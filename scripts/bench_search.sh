#!/usr/bin/env bash
# `make bench-search`: 100 questions against the dev phrase index (`make eval-dev` builds it) three ways
# in one run with the same threads: phrasesweep's per-question IVF search at the defaults, its batch
# scan, and faiss (flat and IVF-SQ) on the same vectors in memory. Prints seconds per 100 questions,
# recall@100 of start hits against exact search, and where the scan's time goes.
set -euo pipefail
cd "$(dirname "$0")/.."
store="${BENCH_STORE:-out/eval-dev}"
questions="${BENCH_QUESTIONS:-../shared/data/nq/dev.jsonl}"
n="${BENCH_N:-100}"
ivf_n="${BENCH_IVF_QUESTIONS:-20}"
threads="${BENCH_THREADS:-$(nproc)}"
[ -d "$store/phrases.lance" ] || { echo "no phrase index in $store: run \`make eval-dev\` first (or set BENCH_STORE)" >&2; exit 1; }
infra/python.sh -c 'import faiss' 2>/dev/null || infra/python.sh -m pip install -q faiss-cpu
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
cargo build -q --workspace --examples
RAYON_NUM_THREADS="$threads" LANCE_CPU_THREADS="$threads" "${CARGO_TARGET_DIR:-target}/debug/examples/bench_search" "$store" "$questions" "$n" "$ivf_n" "$out"
infra/python.sh scripts/bench_faiss.py "$out" "$threads" > "$out/faiss.json"
python3 - "$out/rust.json" "$out/faiss.json" <<'PY'
import json, sys
r, f = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
per100 = 100 / r["questions"]
scan = r["scan_seconds"] * per100
floor = (r["read_seconds"] + r["scan_score"]) * per100
rows = [
    (f"phrasesweep IVF-SQ, per question ({r['ivf_nprobes']} probes, refine {r['ivf_refine']})", r["ivf_seconds_per_question"] * 100, r["ivf_recall"]),
    ("phrasesweep batch scan", scan, 1.0),
    ("faiss IndexFlatIP, batch", f["flat_seconds"] * per100, f["flat_recall"]),
    (f"faiss IndexIVFScalarQuantizer ({f['ivfsq_partitions']} lists, {f['ivfsq_nprobe']} probes), batch", f["ivfsq_seconds"] * per100, f["ivfsq_recall"]),
]
print(f"\n{r['rows']:,} vectors of d = {r['dim']}, {r['questions']} questions (start + end queries), {r['hits']} hits per side, {f['threads']} threads")
print(f"{'method':<72} {'s / 100 q':>10} {'recall@' + str(r['depth']):>10}")
for name, s, rec in rows:
    print(f"{name:<72} {s:>10.2f} {rec:>10.3f}")
print(f"\nscan vs per-question IVF: {rows[0][1] / scan:.1f}x faster; vs faiss flat: {rows[2][1] / scan:.1f}x")
print(f"scan time: read {r['scan_read'] * per100:.2f} s, score {r['scan_score'] * per100:.2f} s ({r['scan_gflop'] / r['scan_score']:.0f} GFLOP/s), select {r['scan_select'] * per100:.2f} s")
print(f"floor (the vectors read once alone, {r['read_seconds'] * per100:.2f} s, plus the product): {floor:.2f} s; the scan is {scan / floor:.2f}x the floor")
print(f"Lance flat search vs the scan, recall@{r['depth']}: {r['flat_recall']}")
PY
