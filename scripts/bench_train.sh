#!/usr/bin/env bash
# `make bench-train`: seconds per 1,000 training questions of each training job in configs/bench-train.toml,
# from the jobs' records, for one or more `phrasesweep` binaries run one after the other on the same config
# (each into a fresh store), e.g. a build before and after a change:
#   scripts/bench_train.sh before=/path/to/old/phrasesweep after=$CARGO_TARGET_DIR/debug/phrasesweep
# Without arguments it measures this checkout's dev build.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -eq 0 ]; then
  cargo build -q --bin phrasesweep
  set -- "this=${CARGO_TARGET_DIR:-target}/debug/phrasesweep"
fi
rows="$(mktemp)"
for arg in "$@"; do
  label="${arg%%=*}" bin="${arg#*=}"
  store="out/bench-train-$label"
  rm -rf "$store"
  sed "s|^uri = .*|uri = \"../$store\"|" configs/bench-train.toml > "out/bench-train-$label.toml"
  start=$(date +%s)
  "$bin" run "out/bench-train-$label.toml" > "out/bench-train-$label.log" 2>&1 || { tail -20 "out/bench-train-$label.log"; exit 1; }
  echo "$label: the whole run $(( $(date +%s) - start )) s" >&2
  python3 - "$label" "$store" >> "$rows" <<'PY'
import json, pathlib, sys
label, store = sys.argv[1], pathlib.Path(sys.argv[2])
for done in sorted(store.glob("jobs/*/done.json")):
    rec = json.loads(done.read_text())
    out = rec.get("output") or {}
    if rec["kind"] in ("train-reader", "train-phrase", "qsft-epoch"):
        name = rec["kind"] + (f" {out['run']} epoch {out['epoch']}" if rec["kind"] == "qsft-epoch" else "")
        print(json.dumps({"label": label, "job": name, "per_1000": out["seconds_per_1000_questions"]}))
PY
done
python3 - "$rows" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
labels = list(dict.fromkeys(r["label"] for r in rows))
jobs = sorted(dict.fromkeys(r["job"] for r in rows))
value = {(r["label"], r["job"]): r["per_1000"] for r in rows}
print("\nseconds per 1,000 training questions")
print(f"{'job':<40}" + "".join(f"{l:>12}" for l in labels) + ("   ratio" if len(labels) == 2 else ""))
for j in jobs:
    vals = [value.get((l, j)) for l in labels]
    line = f"{j:<40}" + "".join(f"{v:>12.0f}" if v is not None else f"{'-':>12}" for v in vals)
    if len(labels) == 2 and None not in vals and vals[1] > 0:
        line += f"   {vals[0] / vals[1]:.2f}x"
    print(line)
PY
