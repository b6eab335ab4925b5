"""The quantum database (qstore.storage.quantum) beyond its notebook: persistence, any VectorStore, random
superpositions, sampled runs, and bench/qdb.py on a small size."""
import importlib
import sys
from pathlib import Path

import numpy as np
import pytest

from qstore.backends.base import LocalBackend
from qstore.storage.db import Database
from qstore.storage.quantum import QuantumDatabase, StateEncoding, StateManager, measure_fidelity
from qstore.storage.vectors import SQLiteVectorStore

ROOT = Path(__file__).resolve().parent.parent


def explicit_sum(states, w):
    "sum_c sqrt(w_c) |c>|psi_c>, the context register as the high part of the index"
    w = np.asarray(w) / np.sum(w)
    slots = 1 << int(np.ceil(np.log2(len(w)))) if len(w) > 1 else 1
    return sum(np.sqrt(wc) * np.kron(np.eye(slots)[c], psi) for c, (wc, psi) in enumerate(zip(w, states)))


def closed_form(enc: StateEncoding, x: np.ndarray) -> np.ndarray:
    if enc.method == 'amplitude':
        a = np.zeros(2 ** enc.n_qubits)
        a[:len(x)] = x
        return a / np.linalg.norm(a)
    out = np.ones(1)
    for xi in x[::-1]: out = np.kron(out, [np.cos(enc.scale * xi / 2), np.sin(enc.scale * xi / 2)])
    return out


@pytest.mark.parametrize('method', ['amplitude', 'angle'])
@pytest.mark.parametrize('n_contexts', [1, 2, 3, 5])
def test_superposition_equals_explicit_sum(method, n_contexts):
    rng = np.random.default_rng(n_contexts)
    enc = StateEncoding(method, 3, scale=0.8)
    vecs, w = rng.normal(size=(n_contexts, 3)), rng.uniform(0.1, 1, n_contexts)
    sv = LocalBackend().statevector(enc.circuit(n_contexts), enc.values(vecs[None], w[None]))[0]
    np.testing.assert_allclose(sv, explicit_sum([closed_form(enc, v) for v in vecs], w), atol=1e-12)


def test_fidelity_of_every_context_and_the_mixture():
    rng = np.random.default_rng(1)
    enc = StateEncoding('angle', 3)
    vecs, w, q = rng.normal(size=(4, 3)), np.array([0.1, 0.2, 0.3, 0.4]), rng.normal(size=3)
    single = np.array([(closed_form(enc, q) @ closed_form(enc, v)) ** 2 for v in vecs])
    be = LocalBackend()
    F, _ = measure_fidelity(be, enc, q, vecs[None], w[None])
    assert abs(F[0] - w @ single) < 1e-12
    for c in range(4): assert abs(measure_fidelity(be, enc, q, vecs[None], w[None], c)[0][0] - single[c]) < 1e-12


def test_records_persist_in_a_file_store(tmp_path):
    rng = np.random.default_rng(2)
    X, q = rng.normal(size=(50, 6)), rng.normal(size=6)
    enc = StateEncoding('amplitude', 6)
    sm = StateManager(enc, store=SQLiteVectorStore(tmp_path / 'v.db'))
    sm.insert([f"r{i}" for i in range(50)], X)
    sm.insert_contexts('mix', {'a': X[0], 'b': X[1]}, {'a': 3, 'b': 1})
    first = QuantumDatabase(sm, n_candidates=20).query(q, k=5)
    sm.store.close()
    again = StateManager(enc, store=SQLiteVectorStore(tmp_path / 'v.db'))
    second = QuantumDatabase(again, n_candidates=20).query(q, k=5)
    assert [(m.id, m.fidelity) for m in first] == [(m.id, m.fidelity) for m in second]
    np.testing.assert_allclose(again.fetch(['mix'])[0].weights, [0.75, 0.25])
    again.store.close()


def test_works_on_a_database_vector_store():
    with Database.open(':memory:') as db:
        enc = StateEncoding('angle', 4)
        sm = StateManager(enc, store=db.vectors, namespace='qdb')
        pts = np.random.default_rng(3).uniform(0, np.pi, (30, 4))
        sm.insert([f"p{i}" for i in range(30)], pts, metadata=[{'half': i < 15} for i in range(30)])
        got = QuantumDatabase(sm, n_candidates=30).query(pts[3], k=3, filter={'half': True})
        assert got[0].id == 'p3' and abs(got[0].fidelity - 1) < 1e-6 and all(m.metadata['half'] for m in got)
        assert db.vectors.count('qdb') == 30


def test_sampled_exploratory_draws_only_measured_hits():
    rng = np.random.default_rng(4)
    enc = StateEncoding('amplitude', 4)
    sm = StateManager(enc)
    X = rng.normal(size=(12, 4))
    sm.insert([f"r{i}" for i in range(12)], X)
    db = QuantumDatabase(sm, backend=LocalBackend(seed=0), n_candidates=12, shots=50)
    for s in range(20):
        for m in db.query(X[0], k=3, mode='exploratory', seed=s): assert m.fidelity > 0
    assert db.last_query['shots'] == 50 and db.last_query['circuits'] == 12


def test_bench_runs_small():
    sys.path.insert(0, str(ROOT / 'bench'))
    try:
        qdb = importlib.import_module('qdb')
        rows = qdb.simulator_rows([400], [20], 3)
        assert [(r['encoding'], r['index']) for r in rows] == [('amplitude', 'cosine'), ('angle', 'euclidean'),
                                                                ('angle', 'cosine')]
        assert rows[0]['recall_at_10'] == 1.0  # amplitude: the +-q cosine index proposes exactly the fidelity top k
        assert all(r['ms_per_query'] > 0 for r in rows)
        ionq = qdb.ionq_rows(300, 12, 100, 1)
        assert all(r['circuits_per_query'] == 12 and r['requests_per_query'] >= 2 for r in ionq)
        assert all(r['aria_usd_per_query'] > 0 and r['cost_usd_per_query'] == 0 for r in ionq)
    finally:
        sys.path.remove(str(ROOT / 'bench'))
