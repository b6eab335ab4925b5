"""Vector store scale benchmark: bulk load, query latency, recall@10 and filtered recall, per store.

    OPENBLAS_NUM_THREADS=1 python bench/stores.py [--n 100000] [--d 64] [--queries 100] [--budget 30] [--only sqlite]

Data: n x d float32 Gaussian vectors (seed 0) with metadata `label = i % 10`, and `--queries` query vectors; top-10
under the Euclidean metric (plus one SQLite cosine row). Every store gets the same data in one `upsert` call.

* `load_s`: the bulk upsert; `first_s`: the first query after it (SQLite builds its in-memory matrix then);
* `p50_ms` / `p99_ms`: wall time of single-vector queries (top 10, metadata included); `cpu_ms`: process CPU time
  per query, which contention from other processes on the machine inflates less than wall time; `server_ms`
  (Pinecone fake only): time per query inside the fake's handlers (its float64 scan), so the SDK + HTTP + JSON
  overhead is roughly p50 minus that;
* `recall`: recall@10 against an exact float64 brute force (ties to the lower index);
* `filt_k`: the fraction of the k = 10 results a filtered query (`label == 3`) returned; `filt_recall` its recall@10
  against the exact filtered top 10; `filt_p50_ms` its latency.

Stores: SQLite (exact; in memory and on a file), Qdrant local mode (`:memory:`: qdrant-client's embedded engine,
exact search in Python; not a Qdrant server), and **Pinecone through the official SDK against the loopback fake**
(tests/pinecone_fake.py): that row measures the SDK + HTTP + JSON overhead plus the fake's numpy scan, *not*
Pinecone's service. Slow stores stop after `--budget` seconds per measurement and report how many queries ran.
pgvector rows come from `bench/stores_pgvector.py` (`run(n, d)` returns rows) when that module exists.
"""
import argparse
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
from common import report

from qstore.storage.vectors import SQLiteVectorStore

try:  # the pgvector rows, written separately; optional so this script runs without PostgreSQL
    import stores_pgvector
except ImportError:
    stores_pgvector = None

K, LABELS, FILTER_LABEL = 10, 10, 3
STORE_COLUMNS = [('store', 'store', '{}'), ('metric', 'metric', '{}'), ('load_s', 'load s', '{:.2f}'),
                 ('first_s', 'first query s', '{:.2f}'), ('p50_ms', 'p50 ms', '{:.2f}'), ('p99_ms', 'p99 ms', '{:.2f}'),
                 ('cpu_ms', 'cpu ms/query', '{:.2f}'), ('server_ms', 'server ms/query', '{:.2f}'),
                 ('recall', 'recall@10', '{:.3f}'), ('queries', 'queries', '{}'), ('filt_k', 'filtered k', '{:.2f}'),
                 ('filt_recall', 'filtered recall', '{:.3f}'), ('filt_p50_ms', 'filtered p50 ms', '{:.2f}'),
                 ('filt_queries', 'filtered queries', '{}'), ('load_avg', 'load avg', '{:.1f}')]


def dataset(n: int, d: int, queries: int, seed: int = 0):
    "Vectors, ids, metadata and query vectors (float32)."
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)).astype(np.float32)
    Q = rng.normal(size=(queries, d)).astype(np.float32)
    return X, [str(i) for i in range(n)], [{'label': i % LABELS} for i in range(n)], Q


def exact_top(X, Q, metric, rows=None, k=K) -> list[list[int]]:
    "Exact float64 top-k row indices per query (ties to the lower index), among `rows` if given."
    X64 = X.astype(np.float64) if rows is None else X[rows].astype(np.float64)
    idx = np.arange(len(X)) if rows is None else rows
    if metric == 'cosine': X64 /= np.linalg.norm(X64, axis=1, keepdims=True)
    out = []
    for q in Q.astype(np.float64):
        if metric == 'euclidean': key = ((X64 - q) ** 2).sum(1)
        else: key = -(X64 @ (q / np.linalg.norm(q)))
        out.append(idx[np.argsort(key, kind='stable')[:k]].tolist())
    return out


def timed_queries(store, Q, budget, **kw):
    "Run single-vector queries until done or `budget` seconds passed (at least 5): results, wall and CPU seconds."
    results, walls, cpus, t_start = [], [], [], time.perf_counter()
    for q in Q:
        w, c = time.perf_counter(), time.process_time()
        results.append(store.query(q, top_k=K, **kw))
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
        if len(results) >= 5 and time.perf_counter() - t_start > budget: break
    return results, np.array(walls), np.array(cpus)


def recall(results, truth) -> float:
    return float(np.mean([len({int(m.id) for m in r} & set(t)) / len(t) for r, t in zip(results, truth)]))


def measure(name, store, X, ids, meta, Q, truth, filtered_truth, budget) -> dict:
    "Load, then time plain and filtered queries on one store."
    t = time.perf_counter()
    store.upsert(ids, X, meta)
    load = time.perf_counter() - t
    t = time.perf_counter()
    store.query(Q[0], top_k=K)
    first = time.perf_counter() - t
    server = SERVER_SECONDS.get(id(store), lambda: 0.0)
    s0 = server()
    res, wall, cpu = timed_queries(store, Q, budget)
    server_ms = 1e3 * (server() - s0) / len(res)
    fres, fwall, _ = timed_queries(store, Q, budget, filter={'label': FILTER_LABEL})
    return {'store': name, 'metric': store.metric, 'n': len(X), 'd': X.shape[1], 'load_s': load, 'first_s': first,
            'p50_ms': 1e3 * np.median(wall), 'p99_ms': 1e3 * np.percentile(wall, 99), 'cpu_ms': 1e3 * cpu.mean(),
            'server_ms': server_ms if id(store) in SERVER_SECONDS else None,
            'recall': recall(res, truth), 'queries': len(res), 'filt_k': np.mean([len(r) / K for r in fres]),
            'filt_recall': recall(fres, filtered_truth), 'filt_p50_ms': 1e3 * np.median(fwall),
            'filt_queries': len(fres), 'load_avg': os.getloadavg()[0]}


def _qdrant(tmp, metric):
    from qstore.storage.qdrant import QdrantStore
    return QdrantStore(':memory:', metric=metric)


def _pinecone(tmp, metric, fakes=[]):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / 'tests'))
    from pinecone_fake import PineconeFake
    from qstore.storage.pinecone import PineconeStore
    if not fakes: fakes.append(PineconeFake().start())
    os.environ['QSTORE_BENCH_PINECONE_KEY'] = fakes[0].api_key
    store = PineconeStore(fakes[0].create_index(f"bench-{metric}", DIM[0], metric), 'QSTORE_BENCH_PINECONE_KEY')
    SERVER_SECONDS[id(store)] = lambda: fakes[0].handler_seconds
    return store


DIM = [64]  # the Pinecone fake's index dimension (set by store_benchmark)
SERVER_SECONDS = {}  # id(store) -> seconds its loopback server has spent in handlers so far
STORES = (('sqlite-memory', 'euclidean', lambda tmp, m: SQLiteVectorStore(':memory:', metric=m)),
          ('sqlite-file', 'euclidean', lambda tmp, m: SQLiteVectorStore(Path(tmp) / 'vectors.db', metric=m)),
          ('sqlite-memory', 'cosine', lambda tmp, m: SQLiteVectorStore(':memory:', metric=m)),
          ('qdrant-local-memory', 'euclidean', _qdrant),
          ('pinecone-fake (SDK+HTTP overhead only)', 'euclidean', _pinecone))


def store_benchmark(n: int = 100_000, d: int = 64, queries: int = 100, budget: float = 30.0,
                    stores=STORES) -> list[dict]:
    "One row per available store (a store whose extra is missing is reported as skipped)."
    X, ids, meta, Q = dataset(n, d, queries)
    DIM[0] = d
    label_rows = np.flatnonzero(np.arange(n) % LABELS == FILTER_LABEL)
    truths = {m: (exact_top(X, Q, m), exact_top(X, Q, m, label_rows)) for m in {m for _, m, _ in stores}}
    rows = []
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter('ignore')  # qdrant-client's local mode warns above 20,000 points
        for name, metric, make in stores:
            try: store = make(tmp, metric)
            except ImportError as e:
                rows.append({'store': name, 'metric': metric, 'skipped': str(e)})
                continue
            with store: rows.append(measure(name, store, X, ids, meta, Q, *truths[metric], budget))
            print(f"  {name} ({metric}) done", file=sys.stderr)
    return rows


def main(argv: list[str] | None = None) -> int:
    "Benchmark every available store, print a table and write JSON."
    p = argparse.ArgumentParser(prog='bench/stores.py', description='Vector store load, latency and recall.')
    p.add_argument('--n', type=int, default=100_000)
    p.add_argument('--d', type=int, default=64)
    p.add_argument('--queries', type=int, default=100)
    p.add_argument('--budget', type=float, default=30.0, help='seconds per measurement before a slow store stops')
    p.add_argument('--only', default='', help="run only the stores whose name starts with this (e.g. 'sqlite')")
    p.add_argument('--out', default=str(Path(__file__).parent / 'results' / 'stores.json'))
    a = p.parse_args(argv)
    rows = store_benchmark(a.n, a.d, a.queries, a.budget, [s for s in STORES if s[0].startswith(a.only)])
    if stores_pgvector is not None and 'pgvector'.startswith(a.only): rows += stores_pgvector.run(a.n, a.d)
    return report('stores', rows, STORE_COLUMNS, a.out)


if __name__ == '__main__':
    sys.exit(main())
