"""faiss on the vectors `bench_search` wrote, in memory: IndexFlatIP batch search and IndexIVFScalarQuantizer
(8-bit, inner product) with the same partitions and probes as phrasesweep's IVF index, for the same start
and end queries and hit count. Recall@DEPTH of start hits is measured against the scan's exact top hits.
Prints one JSON object."""
import json, sys, time
import numpy as np
import faiss

out, threads = sys.argv[1], int(sys.argv[2])
rust = json.load(open(f"{out}/rust.json"))
d, hits, depth, n = rust["dim"], rust["hits"], rust["depth"], rust["questions"]
faiss.omp_set_num_threads(threads)
t = time.time()
x = np.fromfile(f"{out}/vectors.f32", dtype=np.float32).reshape(-1, d)
load_s = time.time() - t
q = np.fromfile(f"{out}/queries.f32", dtype=np.float32).reshape(2 * n, d)
addrs = np.fromfile(f"{out}/addrs.u64", dtype=np.uint64)
exact = np.fromfile(f"{out}/scan_top.u64", dtype=np.uint64).reshape(n, depth)


def recall(found_rows):
    """Mean share of the scan's top start hits among faiss's top `depth` start hits."""
    r = []
    for i in range(n):
        want = set(int(a) for a in exact[i] if a != np.iinfo(np.uint64).max)
        got = set(int(a) for a in addrs[found_rows[i, :depth]])
        r.append(len(want & got) / max(len(want), 1))
    return float(np.mean(r))


flat = faiss.IndexFlatIP(d)
flat.add(x)
t = time.time()
_, rows = flat.search(q, hits)
flat_s = time.time() - t
flat_recall = recall(rows)
del flat

nlist = int(round(np.sqrt(len(x))))
ivf = faiss.IndexIVFScalarQuantizer(faiss.IndexFlatIP(d), d, nlist, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT)
t = time.time()
sample = x[np.random.default_rng(0).choice(len(x), min(len(x), 256 * nlist), replace=False)]
ivf.train(sample)
ivf.add(x)
build_s = time.time() - t
ivf.nprobe = rust["ivf_nprobes"]
t = time.time()
_, rows = ivf.search(q, hits)
ivf_s = time.time() - t
print(json.dumps({
    "rows": len(x), "queries": 2 * n, "hits": hits, "threads": threads, "load_seconds": load_s,
    "flat_seconds": flat_s, "flat_recall": flat_recall,
    "ivfsq_partitions": nlist, "ivfsq_nprobe": ivf.nprobe, "ivfsq_build_seconds": build_s,
    "ivfsq_seconds": ivf_s, "ivfsq_recall": recall(rows),
}))
