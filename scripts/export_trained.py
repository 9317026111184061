#!/usr/bin/env python3
"""Copies the models that a finished `train-phrase` job published on a local store into DEST/phrase and
DEST/query, so that another sweep's config can name them by a stable path (configs/qsft-trained.toml).
Usage: export_trained.py STORE DEST"""
import glob
import json
import os
import shutil
import sys

store, dest = sys.argv[1], sys.argv[2]
done = [json.load(open(p)) for p in glob.glob(os.path.join(store, "jobs", "*", "done.json"))]
trained = sorted((d for d in done if d["kind"] == "train-phrase"), key=lambda d: d["at_unix"])
if not trained:
    sys.exit(f"{store}: no finished train-phrase job; run `make train-cpu` first")
for name, ref in trained[-1]["output"]["checkpoints"].items():
    src = os.path.join(store, ref["path"].removeprefix("store:"))
    tmp = os.path.join(dest, name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp)
    shutil.rmtree(os.path.join(dest, name), ignore_errors=True)
    os.replace(tmp, os.path.join(dest, name))
    print(f"{os.path.join(dest, name)}: {ref['sha256']}")
