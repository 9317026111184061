"""Hits two stores share, per retrieval: `infra/python.sh scripts/shared_hits.py STORE_A STORE_B RETRIEVAL...`.

For each retrieval, the share of store A's ranked hits (same unit, text, document, paragraph and span) that
store B also returned for the same question, and how many questions got identical ranked lists. Used
for f16 against f32 vectors in docs/benchmarks.md.
"""
import pyarrow.parquet as pq, glob, sys, collections
a, b = sys.argv[1], sys.argv[2]
def load(store, r):
    d = collections.defaultdict(list)
    for f in sorted(glob.glob(f'{store}/results/{r}/*.parquet')):
        t = pq.read_table(f, columns=['question_id','rank','unit','text','doc_id','paragraph','span_start','span_end']).to_pylist()
        for row in t:
            d[row['question_id']].append((row['rank'], (row['unit'], row['text'], row['doc_id'], row['paragraph'], row['span_start'], row['span_end'])))
    return {q: [h for _, h in sorted(v)] for q, v in d.items()}
for r in sys.argv[3:]:
    x, y = load(a, r), load(b, r)
    hits = same = lists = 0
    for q in x:
        hx, hy = x[q], y.get(q, [])
        hits += len(hx); same += sum((collections.Counter(hx) & collections.Counter(hy)).values()); lists += hx == hy
    print(f'{r:<12} hits {hits:>7}  shared {same/hits:.4f}  identical ranked lists {lists}/{len(x)}')
