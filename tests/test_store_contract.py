"""One contract suite for every `VectorStore`.

To run it against another store, add ONE line to `STORE_FACTORIES`: a name and a function
`(tmp_path, metric) -> empty open store`. A factory that needs a server which is not available calls
`pytest.skip(...)`. Tests that need two processes use stores whose `shareable` is True (pickling reopens the
same data) and skip the others.
"""
import multiprocessing as mp

import numpy as np
import pytest
import store_factories

from qstore.storage.files import NotFoundError
from qstore.storage.vectors import METRICS, Match, NamespaceInfo, Record, SQLiteVectorStore, match_filter
from pg_util import pg_vector_store

STORE_FACTORIES = {
    'sqlite-memory': lambda tmp_path, metric: SQLiteVectorStore(':memory:', metric=metric),
    'sqlite-file': lambda tmp_path, metric: SQLiteVectorStore(tmp_path / 'vectors.db', metric=metric),
    'qdrant-local': lambda tmp_path, metric: store_factories.qdrant_store(tmp_path, metric),
    'pinecone-fake': lambda tmp_path, metric: store_factories.pinecone_store(tmp_path, metric),
    'pgvector': pg_vector_store,  # skips without $QSTORE_TEST_PG_URL (fails instead under QSTORE_REQUIRE_PG=1)
}


@pytest.fixture(params=list(STORE_FACTORIES))
def make_store(request, tmp_path):
    "Build stores of the parametrised kind (any metric); all are closed after the test."
    opened = []

    def make(metric='cosine'):
        s = STORE_FACTORIES[request.param](tmp_path, metric)
        opened.append(s)
        return s
    yield make
    for s in opened: s.close()


@pytest.fixture
def store(make_store): return make_store()


D = 8
COLORS = ['red', 'green', 'blue']


def dataset(n=40, seed=0):
    "Vectors, ids and varied metadata (ints, strings, bools, lists, a missing key)."
    X = np.random.default_rng(seed).normal(size=(n, D)).astype(np.float32)
    ids = [f"id-{i}" for i in range(n)]
    meta = []
    for i in range(n):
        m = {'i': i, 'label': i % 4, 'score': i / 10, 'flag': i % 2 == 0, 'tags': [f"t{i % 3}", f"u{i % 5}"]}
        if i % 7: m['color'] = COLORS[i % 3]  # every 7th record has no color
        meta.append(m)
    return X, ids, meta


def reference_scores(metric, q, X):
    if metric == 'dot': return q @ X.T
    if metric == 'cosine':
        return (q / np.linalg.norm(q, axis=-1, keepdims=True)) @ (X / np.linalg.norm(X, axis=1, keepdims=True)).T
    return ((q[..., None, :] - X) ** 2).sum(-1)


# --- round trips ------------------------------------------------------------------------------------

def test_upsert_fetch_roundtrip_and_replace(store):
    X, ids, meta = dataset()
    assert store.upsert(ids, X, meta) == 40
    assert store.count() == 40
    got = store.fetch(['id-3', 'missing', 'id-39'])
    assert list(got) == ['id-3', 'id-39']
    assert isinstance(got['id-3'], Record)
    np.testing.assert_array_equal(got['id-39'].values, X[39])
    assert got['id-3'].metadata == meta[3]
    # upsert of an existing id replaces vector and metadata; the count is unchanged
    store.upsert(['id-3'], X[4:5] * 3, [{'replaced': True}])
    assert store.count() == 40
    rec = store.fetch(['id-3'])['id-3']
    np.testing.assert_array_equal(rec.values, X[4] * 3)
    assert rec.metadata == {'replaced': True}


def test_metadata_none_and_empty_upsert(store):
    store.upsert(['a', 'b'], np.eye(2, D), None)
    assert store.fetch(['a'])['a'].metadata == {}
    assert store.upsert([], np.zeros((0, D))) == 0
    assert store.count() == 2


@pytest.mark.parametrize('metric', METRICS)
def test_metric_scores_and_order(make_store, metric):
    store = make_store(metric)
    X, ids, meta = dataset()
    store.upsert(ids, X, meta)
    q = np.random.default_rng(1).normal(size=(5, D)).astype(np.float32)
    res = store.query(q, top_k=6)
    ref = reference_scores(metric, q, X)
    for b in range(5):
        order = np.argsort(ref[b] if metric == 'euclidean' else -ref[b], kind='stable')[:6]
        assert [m.id for m in res[b]] == [ids[j] for j in order]
        np.testing.assert_allclose([m.score for m in res[b]], ref[b][order], rtol=1e-4, atol=1e-4)
    assert store.describe().metric == metric
    # a stored vector is its own nearest neighbour, with the best possible score
    best = store.query(X[11], top_k=1)[0]
    assert best.id == 'id-11'
    expected = {'cosine': 1.0, 'dot': float(X[11] @ X[11]), 'euclidean': 0.0}[metric]
    assert best.score == pytest.approx(expected, rel=1e-4, abs=1e-4)


def test_single_and_batch_query_agree(store):
    X, ids, meta = dataset()
    store.upsert(ids, X, meta)
    q = np.random.default_rng(2).normal(size=(4, D))
    batch = store.query(q, top_k=3, filter={'label': {'$ne': 1}})
    assert len(batch) == 4 and all(len(r) == 3 for r in batch)
    for b in range(4):
        single = store.query(q[b], top_k=3, filter={'label': {'$ne': 1}})
        assert all(isinstance(m, Match) for m in single)
        assert [(m.id, round(m.score, 5)) for m in single] == [(m.id, round(m.score, 5)) for m in batch[b]]
    assert store.query(np.zeros((0, D))) == []


def test_include_flags_and_top_k_larger_than_store(store):
    X, ids, meta = dataset(n=5)
    store.upsert(ids, X, meta)
    res = store.query(X[0], top_k=50, include_values=True, include_metadata=False)
    assert len(res) == 5
    assert res[0].metadata is None
    np.testing.assert_array_equal(res[0].values, X[0])
    plain = store.query(X[0], top_k=2)
    assert plain[0].values is None and plain[0].metadata == meta[0]


# --- filters ----------------------------------------------------------------------------------------

FILTER_CASES = [
    ({'label': 2}, lambda m: m['label'] == 2),
    ({'label': {'$eq': 2}}, lambda m: m['label'] == 2),
    ({'label': {'$ne': 2}}, lambda m: m['label'] != 2),
    ({'i': {'$gt': 30}}, lambda m: m['i'] > 30),
    ({'i': {'$gte': 30}}, lambda m: m['i'] >= 30),
    ({'score': {'$lt': 0.5}}, lambda m: m['score'] < 0.5),
    ({'score': {'$lte': 0.5}}, lambda m: m['score'] <= 0.5),
    ({'color': {'$in': ['red', 'blue']}}, lambda m: m.get('color') in ('red', 'blue')),
    ({'color': {'$nin': ['red']}}, lambda m: m.get('color') != 'red'),  # missing color matches $nin
    ({'color': {'$exists': False}}, lambda m: 'color' not in m),
    ({'flag': True}, lambda m: m['flag'] is True),
    ({'tags': 't1'}, lambda m: 't1' in m['tags']),  # list field: any element
    ({'tags': {'$in': ['u0', 'u4']}}, lambda m: bool({'u0', 'u4'} & set(m['tags']))),
    ({'$and': [{'label': {'$in': [0, 1]}}, {'i': {'$lt': 20}}]}, lambda m: m['label'] in (0, 1) and m['i'] < 20),
    ({'$or': [{'label': 3}, {'color': 'green'}]}, lambda m: m['label'] == 3 or m.get('color') == 'green'),
    ({'label': 1, 'flag': False}, lambda m: m['label'] == 1 and not m['flag']),  # implicit $and
    ({'$or': [{'$and': [{'i': {'$gte': 10}}, {'i': {'$lt': 13}}]}, {'i': 0}]}, lambda m: m['i'] in (0, 10, 11, 12)),
]


@pytest.mark.parametrize('flt,expected', FILTER_CASES, ids=[str(f) for f, _ in FILTER_CASES])
def test_filters(store, flt, expected):
    X, ids, meta = dataset()
    store.upsert(ids, X, meta)
    want = {ids[i] for i in range(40) if expected(meta[i])}
    assert want == {ids[i] for i in range(40) if match_filter(flt, meta[i])}  # the shared evaluator agrees
    assert store.count(filter=flt) == len(want)
    res = store.query(X[0], top_k=40, filter=flt)
    assert {m.id for m in res} == want
    assert all(expected(m.metadata) for m in res)


def test_filter_matches_nothing(store):
    X, ids, meta = dataset()
    store.upsert(ids, X, meta)
    assert store.query(X[0], top_k=5, filter={'label': 17}) == []
    assert store.count(filter={'label': 17}) == 0


# --- namespaces -------------------------------------------------------------------------------------

def test_namespaces_are_isolated(store):
    X, ids, meta = dataset(n=10)
    store.upsert(ids, X, meta)
    store.upsert(['id-0', 'other'], X[:2] * -1, [{'ns': 'b'}, {'ns': 'b'}], namespace='b')
    assert store.count() == 10 and store.count(namespace='b') == 2
    np.testing.assert_array_equal(store.fetch(['id-0'], namespace='b')['id-0'].values, -X[0])
    np.testing.assert_array_equal(store.fetch(['id-0'])['id-0'].values, X[0])
    assert {m.id for m in store.query(X[0], top_k=10, namespace='b')} == {'id-0', 'other'}
    assert store.fetch(['other']) == {}
    assert set(store.namespaces()) == {'', 'b'}
    assert store.namespaces()['b'].count == 2
    with pytest.raises(NotFoundError, match=r"namespace 'never-written' does not exist; namespaces: \['', 'b'\]"):
        store.query(X[0], namespace='never-written')  # issue 11: a misspelt namespace is an error, not []
    assert store.describe('never-written') is None


def test_namespace_dimension_and_metric_are_fixed(make_store):
    store = make_store()
    dim, refusal = 3, 'already exists'
    if getattr(store, 'shared_schema', False):
        # Narrow exception (Pinecone): an index has ONE dimension and metric for all its namespaces, so a namespace
        # cannot choose its own. Asking for another is refused; the checks below run at the index's schema.
        with pytest.raises(ValueError, match='every namespace of this Pinecone index has dimension 8'):
            store.create_namespace('e', dimension=3, metric='euclidean')
        store, dim, refusal = make_store('euclidean'), D, 'every namespace of this Pinecone index'
    pad = [0] * (dim - 3)
    info = store.create_namespace('e', dimension=dim, metric='euclidean')
    assert info == NamespaceInfo('e', dim, 'euclidean', 0)
    assert store.create_namespace('e', dimension=dim, metric='euclidean') == info  # idempotent
    with pytest.raises(ValueError, match=refusal):
        store.create_namespace('e', dimension=dim + 1, metric='euclidean')
    store.upsert(['p', 'q'], [[0, 0, 0] + pad, [3, 4, 0] + pad], namespace='e')
    assert [round(m.score, 4) for m in store.query([0, 0, 0] + pad, namespace='e')] == [0.0, 25.0]
    with pytest.raises(ValueError, match='dimension mismatch'):
        store.upsert(['r'], [[1, 2]], namespace='e')
    with pytest.raises(ValueError, match='dimension mismatch'):
        store.query([1, 2, 3, 4], namespace='e')
    with pytest.raises(ValueError, match='unknown metric'):
        store.create_namespace('x', dimension=3, metric='manhattan')


# --- delete -----------------------------------------------------------------------------------------

def test_delete_by_ids_filter_and_all(store):
    X, ids, meta = dataset()
    store.upsert(ids, X, meta)
    store.upsert(['keep'], X[:1], namespace='other')
    assert store.delete(['id-0', 'id-1', 'not-there']) == 2
    assert store.count() == 38
    n_label3 = sum(m['label'] == 3 for m in meta[2:])
    assert store.delete(filter={'label': 3}) == n_label3
    assert store.count(filter={'label': 3}) == 0 and store.count() == 38 - n_label3
    assert all(m.metadata['label'] != 3 for m in store.query(X[3], top_k=40))
    assert store.delete(filter={'label': 99}) == 0
    assert store.delete(delete_all=True) == 38 - n_label3
    assert store.count() == 0 and store.describe() is None
    assert store.count(namespace='other') == 1  # other namespaces untouched
    for bad in (dict(), dict(ids=['a'], filter={'x': 1}), dict(filter={})):
        with pytest.raises(ValueError):
            store.delete(**bad)


# --- validation -------------------------------------------------------------------------------------

def test_validation_errors(store):
    store.upsert(['a'], np.ones((1, D)))
    cases = [
        (lambda: store.upsert(['a', 'a'], np.ones((2, D))), "duplicate id 'a'"),
        (lambda: store.upsert([1, 2], np.ones((2, D))), 'ids must be non-empty strings'),
        (lambda: store.upsert('a', np.ones((1, D))), 'list of strings'),
        (lambda: store.upsert(['x'], np.ones((1, D + 1))), 'dimension mismatch'),
        (lambda: store.upsert(['x', 'y'], np.array([[1.0] * D, [np.inf] * D])), "row 1 (id 'y') contains NaN or inf"),
        (lambda: store.upsert(['x'], np.full((1, D), np.nan)), 'contains NaN'),
        (lambda: store.upsert(['x'], np.ones(D)), 'must be 2-D'),
        (lambda: store.upsert(['x', 'y'], np.ones((1, D))), '2 ids but 1 vectors'),
        (lambda: store.upsert(['x'], np.zeros((1, D))), 'all zeros'),  # the default metric is cosine
        (lambda: store.upsert(['x'], np.ones((1, D)), [{'nested': {'a': 1}}]), 'flatten nested'),
        (lambda: store.upsert(['x'], np.ones((1, D)), [{'k': None}]), 'omit the key'),
        (lambda: store.query(np.ones(D + 2)), 'dimension mismatch'),
        (lambda: store.query(np.full(D, np.nan)), 'contains NaN'),
        (lambda: store.query(np.ones(D), top_k=0), 'top_k must be a positive integer'),
        (lambda: store.query(np.ones(D), filter={'a': {'$regex': 'x'}}), "unknown filter operator '$regex'"),
        (lambda: store.query(np.ones(D), filter={'$nor': [{'a': 1}]}), "unknown filter operator '$nor'"),
        (lambda: store.count(filter={'a': {'$gt': 'b'}}), 'needs a number'),
        (lambda: store.delete(filter={'a': {'$in': []}}), 'non-empty list'),
    ]
    for fn, msg in cases:
        with pytest.raises((ValueError, TypeError)) as e:
            fn()
        assert msg in str(e.value), (msg, str(e.value))
    assert store.count() == 1  # nothing partial was written


# --- processes --------------------------------------------------------------------------------------

N_BATCHES, BATCH = 30, 6


def writer_vectors(worker):
    return np.random.default_rng(100 + worker).normal(size=(N_BATCHES * BATCH, D)).astype(np.float32)


def writer(store, worker, barrier):
    "Runs in a spawned process: many small upserts, started together with the other writer."
    X = writer_vectors(worker)
    barrier.wait()
    for b in range(N_BATCHES):
        rows = slice(b * BATCH, (b + 1) * BATCH)
        store.upsert([f"w{worker}-{i}" for i in range(rows.start, rows.stop)], X[rows],
                     [{'worker': worker, 'batch': b}] * BATCH)
    store.close()


def test_two_writer_processes_lose_nothing(store):
    if not store.shareable:
        pytest.skip('store lives in one process')
    store.upsert(['seed'], np.ones((1, D)))  # creates the namespace, as a running application would have
    ctx = mp.get_context('spawn')
    barrier = ctx.Barrier(2)
    procs = [ctx.Process(target=writer, args=(store, w, barrier)) for w in (0, 1)]
    for p in procs: p.start()
    for p in procs: p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    assert store.count() == 1 + 2 * N_BATCHES * BATCH
    for w in (0, 1):
        X = writer_vectors(w)
        ids = [f"w{w}-{i}" for i in range(len(X))]
        got = store.fetch(ids)
        assert len(got) == len(ids)
        np.testing.assert_array_equal(np.stack([got[i].values for i in ids]), X)
        nearest = store.query(X, top_k=1)
        assert [r[0].id for r in nearest] == ids  # every vector is its own nearest neighbour
        assert store.count(filter={'worker': w}) == len(ids)


def test_pickled_store_sees_same_data(store):
    if not store.shareable:
        pytest.skip('store lives in one process')
    import pickle
    X, ids, meta = dataset(n=5)
    store.upsert(ids, X, meta)
    twin = pickle.loads(pickle.dumps(store))
    try:
        twin.upsert(['from-twin'], X[:1] * 2)
        assert store.count() == 6  # the original sees the twin's write
        assert store.query(X[0] * 2, top_k=2)[0].id in {'id-0', 'from-twin'}
    finally:
        twin.close()
