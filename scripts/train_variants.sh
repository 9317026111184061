#!/usr/bin/env bash
# The training variants of docs/benchmarks.md ("Phrase-encoder training and QSFT with the study's
# recipe"): `make train-cpu` and `make qsft-trained` as configured, then the same budget with the old
# all-tokens negatives and with a constant learning rate, each in its own store (the seeded reader comes
# out the same) and followed by its own `qsft-trained`. The variant configs are written under out/
# (relative paths resolve the same from there). Resumable: finished jobs are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/phrasesweep/target}"
cargo build -q --bin phrasesweep
bin="$CARGO_TARGET_DIR/debug/phrasesweep"
python3 scripts/nq_gold_corpus.py ../shared/data/corpus/dev.docs.jsonl out/nq-gold.docs.jsonl

# `variant NAME STORE TRAIN_CONFIG`: train, export the phrase encoder it trained, run QSFT from it.
variant() {
    local name=$1 store=$2 config=$3
    "$bin" run "$config"
    infra/python.sh scripts/export_trained.py "out/$store" "out/models/$name"
    sed "s|out/qsft-trained\"|out/qsft-trained-$name\"|; s|out/models/train-cpu/|out/models/$name/|g" configs/qsft-trained.toml > "out/qsft-trained-$name.toml"
    "$bin" run "out/qsft-trained-$name.toml"
}

mkdir -p out
variant defaults train-cpu configs/train-cpu.toml
sed 's|out/train-cpu"|out/train-cpu-all-tokens"|; s/^filter_keep = 0.5$/filter_keep = 0.5\nnegatives = { kind = "all-tokens" }/' configs/train-cpu.toml > out/train-cpu-all-tokens.toml
variant all-tokens train-cpu-all-tokens out/train-cpu-all-tokens.toml
sed 's|out/train-cpu"|out/train-cpu-constant"|; s|checkpoint_every = 20 }|checkpoint_every = 20, schedule = "constant" }|' configs/train-cpu.toml > out/train-cpu-constant.toml
variant constant train-cpu-constant out/train-cpu-constant.toml
