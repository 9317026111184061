#!/usr/bin/env python3
"""Writes the NQ gold documents of the dev corpus (source "nq-gold-2018": the gold paragraphs of every
nq/* question, 2,140 documents, 2,227 paragraphs) as a corpus of their own, for training runs sized to a
CPU (configs/qsft-cpu.toml). Usage: nq_gold_corpus.py DEV_DOCS OUT"""
import json
import os
import sys

src, out = sys.argv[1], sys.argv[2]
os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
tmp = out + ".partial"
with open(src, encoding="utf-8") as f, open(tmp, "w", encoding="utf-8") as g:
    for line in f:
        if line.strip() and json.loads(line)["source"] == "nq-gold-2018":
            g.write(line)
os.replace(tmp, out)
