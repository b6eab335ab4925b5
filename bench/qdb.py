"""Quantum database benchmark: recall@10 of the two-stage search, latency per query, and what a query costs on IonQ.

`QuantumDatabase` answers a query in two stages: the classical vector index (SQLite, exact numpy search) proposes
`n_candidates` records, and their fidelities |<psi(q)|psi(x)>|^2 re-rank them. This script measures, on synthetic
clustered data (100 Gaussian clusters; queries drawn from the same clusters, not stored):

1. recall@10 of that search against the exhaustive ranking of *every* record by exact fidelity (closed forms,
   computed without circuits: cos^2(q, x) for amplitude encoding, prod_i cos^2(x_i - q_i)/2 for angle encoding),
   at 10k and 100k records and 100-1,000 candidates; and the latency per query on the local statevector simulator
   (median over the queries; index stage and kernel stage separately). `precise` mode is the balanced query with
   `precise_factor` (4) times the candidates, so its row is the balanced row with 4x the candidates.
   - amplitude encoding: 64 features on 6 qubits, cosine index asked for q and -q;
   - angle encoding: 8 features in [0, pi] on 8 qubits, Euclidean index (the metric that follows this kernel);
   - angle encoding with a cosine index, a mismatched proposer, to show what the candidate stage can lose.
2. On IonQ's API (qstore's emulator on 127.0.0.1; the `ionq.simulator` target): circuits, HTTP requests, jobs and
   estimated cost per query with 100 candidates and 1,000 shots, plus what the same circuits and shots would cost
   on an Aria QPU (IonQ's gate-shot pricing on the gates sent), and recall@10 of the sampled ranking.

    OPENBLAS_NUM_THREADS=1 .venv/bin/python bench/qdb.py [--sizes 10000 100000] [--candidates 100 300 1000]
"""
import argparse, os, statistics, time
os.environ.setdefault('OPENBLAS_NUM_THREADS', '1')
import numpy as np
from common import machine_info, print_table, write_json

from qstore.backends.base import get_backend
from qstore.ionq.emulator import EmulatorConfig, EmulatorServer
from qstore.storage.quantum import QuantumDatabase, StateEncoding, StateManager
from qstore.storage.vectors import SQLiteVectorStore

KEY = 'bench-key'  # the emulator accepts any key; nothing here talks to IonQ
ENCODINGS = {'amplitude': StateEncoding('amplitude', 64), 'angle': StateEncoding('angle', 8)}
SETUPS = (('amplitude', 'cosine'), ('angle', 'euclidean'), ('angle', 'cosine'))  # (encoding, index metric)


def clustered(n: int, d: int, method: str, rng, centres) -> np.ndarray:
    "n points around random cluster centres: mixed-sign for amplitude encoding, inside [0, pi] for angle encoding."
    pick = centres[rng.integers(len(centres), size=n)]
    if method == 'amplitude': return pick + 0.6 * rng.normal(size=(n, d))
    return np.clip(pick + 0.25 * rng.normal(size=(n, d)), 0, np.pi)


def make_data(method: str, n: int, n_queries: int, seed: int = 0):
    enc = ENCODINGS[method]
    rng = np.random.default_rng(seed)
    d = enc.n_features
    centres = rng.normal(size=(100, d)) if method == 'amplitude' else rng.uniform(0, np.pi, size=(100, d))
    return clustered(n, d, method, rng, centres), clustered(n_queries, d, method, rng, centres)


def exact_fidelity(method: str, X: np.ndarray, q: np.ndarray) -> np.ndarray:
    "Closed-form fidelity of q with every row of X (X as stored: float32)."
    X = X.astype(np.float32).astype(float)
    if method == 'amplitude': return (X @ q / np.linalg.norm(X, axis=1) / np.linalg.norm(q)) ** 2
    return np.prod(np.cos((X - q) / 2) ** 2, axis=1)


def fill(method: str, X: np.ndarray, metric: str | None = None) -> StateManager:
    sm = StateManager(ENCODINGS[method], store=None if metric is None else SQLiteVectorStore(metric=metric))
    for s in range(0, len(X), 20_000): sm.insert([f"r{i}" for i in range(s, min(s + 20_000, len(X)))], X[s:s + 20_000])
    return sm


def recall_at_10(method, X, q, got) -> float:
    top = {f"r{i}" for i in np.argsort(-exact_fidelity(method, X, q), kind='stable')[:10]}
    return len(top & {m.id for m in got}) / 10


def simulator_rows(sizes, candidates, n_queries) -> list[dict]:
    rows = []
    for method, metric in SETUPS:
        for n in sizes:
            X, Q = make_data(method, n, n_queries)
            t = time.perf_counter()
            sm = fill(method, X, metric)
            load = time.perf_counter() - t
            for c in candidates:
                db = QuantumDatabase(sm, n_candidates=c)
                db.query(Q[0], k=10)  # warm-up: loads the index snapshot and builds the templates
                rec, lat, idx, ker = [], [], [], []
                for q in Q:
                    t = time.perf_counter()
                    got = db.query(q, k=10)
                    lat.append(time.perf_counter() - t)
                    idx.append(db.last_query['index_seconds'])
                    ker.append(db.last_query['kernel_seconds'])
                    rec.append(recall_at_10(method, X, q, got))
                    truth = exact_fidelity(method, X, q)
                    assert all(abs(m.fidelity - truth[int(m.id[1:])]) < 1e-9 for m in got)  # the kernel is exact
                rows.append({'encoding': method, 'index': metric, 'qubits': ENCODINGS[method].n_qubits,
                             'records': n, 'candidates': c, 'queries': len(Q), 'recall_at_10': float(np.mean(rec)),
                             'min_recall': float(np.min(rec)), 'ms_per_query': 1e3 * statistics.median(lat),
                             'index_ms': 1e3 * statistics.median(idx), 'kernel_ms': 1e3 * statistics.median(ker),
                             'load_s': load})
                db.close()
                print(rows[-1], flush=True)
            sm.store.close()
    return rows


def ionq_rows(n: int, candidates: int, shots: int, n_queries: int) -> list[dict]:
    rows = []
    with EmulatorServer(EmulatorConfig()) as srv:
        for method in ENCODINGS:
            X, Q = make_data(method, n, n_queries, seed=1)
            sm = fill(method, X)
            backend = get_backend('ionq.simulator', base_url=srv.base_url, api_key=KEY, seed=5, poll_interval=0.02)
            db = QuantumDatabase(sm, backend=backend, n_candidates=candidates, shots=shots)
            spent, rec, wall = [], [], []
            for i, q in enumerate(Q):
                t = time.perf_counter()
                got = db.query(q, k=10, seed=i)
                wall.append(time.perf_counter() - t)
                spent.append(db.last_query)
                rec.append(recall_at_10(method, X, q, got))
            mean = lambda k: float(np.mean([s[k] for s in spent]))
            rows.append({'encoding': method, 'qubits': ENCODINGS[method].n_qubits, 'records': n,
                         'candidates': candidates, 'shots': shots, 'queries': len(Q),
                         'circuits_per_query': mean('circuits'), 'requests_per_query': mean('requests'),
                         'jobs_per_query': mean('jobs'), 'cost_usd_per_query': mean('cost_usd'),
                         'aria_usd_per_query': mean('qpu_equivalent_usd'), 's_per_query': statistics.median(wall),
                         'recall_at_10': float(np.mean(rec))})
            db.close()
            sm.close()
            print(rows[-1], flush=True)
    return rows


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--sizes', type=int, nargs='+', default=[10_000, 100_000], help='records in the database')
    p.add_argument('--candidates', type=int, nargs='+', default=[100, 300, 1000], help='candidates per query')
    p.add_argument('--queries', type=int, default=50, help='queries per configuration (simulator)')
    p.add_argument('--ionq-records', type=int, default=10_000, help='records for the IonQ emulator run')
    p.add_argument('--ionq-queries', type=int, default=3, help='queries on the IonQ emulator')
    p.add_argument('--shots', type=int, default=1000, help='shots per circuit on IonQ')
    p.add_argument('--out', default='bench/results/qdb.json')
    a = p.parse_args()
    payload = {'benchmark': 'qdb', 'machine': machine_info(), 'load_average': os.getloadavg()}
    print("== two-stage search vs exhaustive exact fidelity (local statevector simulator)")
    payload['rows'] = simulator_rows(a.sizes, a.candidates, a.queries)
    print_table(payload['rows'], [('encoding', 'encoding', '{}'), ('index', 'index', '{}'), ('qubits', 'qubits', '{}'),
                                  ('records', 'records', '{:,}'), ('candidates', 'candidates', '{:,}'),
                                  ('recall_at_10', 'recall@10', '{:.3f}'), ('min_recall', 'min', '{:.1f}'),
                                  ('ms_per_query', 'ms/query', '{:.1f}'), ('index_ms', 'index ms', '{:.1f}'),
                                  ('kernel_ms', 'kernel ms', '{:.1f}')])
    print(f"\n== on IonQ's API (emulator on 127.0.0.1, ionq.simulator), {a.shots} shots per circuit")
    payload['ionq_rows'] = ionq_rows(a.ionq_records, min(a.candidates), a.shots, a.ionq_queries)
    print_table(payload['ionq_rows'], [
        ('encoding', 'encoding', '{}'), ('records', 'records', '{:,}'), ('candidates', 'candidates', '{}'),
        ('circuits_per_query', 'circuits', '{:.0f}'), ('requests_per_query', 'requests', '{:.1f}'),
        ('jobs_per_query', 'jobs', '{:.1f}'), ('cost_usd_per_query', 'sim $', '{:.2f}'),
        ('aria_usd_per_query', 'Aria $', '{:,.2f}'), ('s_per_query', 's/query', '{:.2f}'),
        ('recall_at_10', 'recall@10', '{:.2f}')])
    payload['load_average_after'] = os.getloadavg()
    write_json(a.out, payload)
    print(f"\nwrote {a.out}")


if __name__ == '__main__':
    main()
