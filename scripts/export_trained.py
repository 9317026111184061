#!/usr/bin/env python3
"""Copies the models that a finished `train-phrase` job published on a local store into DEST/phrase and
DEST/query, so that another sweep's config can name them by a stable path (configs/qsft-trained.toml,
`[encode] model` and `[encoders]` of configs/demo.toml).

Usage: export_trained.py STORE DEST [--examples N] [--qsft RUN ...]
  --examples N  the train-phrase job that trained on N questions (a learning curve's store holds several);
                without it, the last one to finish
  --qsft RUN    also the query encoder of QSFT run RUN over that phrase encoder's index, at the epoch
                its retrievals used (the run's `select`), into DEST/qsft/RUN"""
import argparse
import glob
import json
import os
import shutil

args = argparse.ArgumentParser()
args.add_argument("store")
args.add_argument("dest")
args.add_argument("--examples", type=int)
args.add_argument("--qsft", action="append", default=[])
a = args.parse_args()

done = [json.load(open(p)) for p in glob.glob(os.path.join(a.store, "jobs", "*", "done.json"))]
trained = sorted((d for d in done if d["kind"] == "train-phrase" and a.examples in (None, d["output"]["examples"])), key=lambda d: d["at_unix"])
if not trained:
    raise SystemExit(f"{a.store}: no finished train-phrase job{'' if a.examples is None else f' of {a.examples} questions'}; run its config first")


def copy(name, ref):
    src = os.path.join(a.store, ref["path"].removeprefix("store:"))
    tmp = os.path.join(a.dest, name + ".partial")
    os.makedirs(os.path.dirname(tmp), exist_ok=True)
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp)
    shutil.rmtree(os.path.join(a.dest, name), ignore_errors=True)
    os.replace(tmp, os.path.join(a.dest, name))
    print(f"{os.path.join(a.dest, name)}: {ref['sha256']}")


phrase = trained[-1]["output"]["checkpoints"]
for name, ref in phrase.items():
    copy(name, ref)
# The filter threshold calibrated after training: a config that encodes with the exported phrase encoder
# needs it to keep the same tokens (without it, every token is kept).
calibrated = (trained[-1]["output"].get("after") or {}).get("calibrated")
if calibrated:
    print(f"its index was filtered at [encode] filter_threshold = {calibrated['threshold']:.4f}")
if a.qsft:
    # The run ledger names the query encoder each run's retrievals used (the coordinator's choice of
    # epoch) beside the phrase encoder its index came from, by sha256.
    import pyarrow.parquet as pq

    runs = sorted((r for f in glob.glob(os.path.join(a.store, "runs", "*.parquet")) for r in pq.read_table(f).to_pylist()), key=lambda r: r["started_unix"])
    used = [json.loads(r["models"]) for r in runs if r["status"] == "done"]
    epochs = {d["output"]["checkpoint"]["sha256"]: d["output"] for d in done if d["kind"] == "qsft-epoch"}
for run in a.qsft:
    chosen = [m[run] for m in used if m.get("phrase_encoder") == phrase["phrase"]["sha256"] and run in m]
    if not chosen or chosen[-1] not in epochs:
        raise SystemExit(f"{a.store}: no finished run retrieved with QSFT run `{run}` over this phrase encoder's index")
    e = epochs[chosen[-1]]
    print(f"{run}: epoch {e['epoch']} (dev EM {e['dev']['em']:.3f}, sentence mAR {e['dev']['sentence_mar']:.3f})")
    copy(os.path.join("qsft", run), e["checkpoint"])
