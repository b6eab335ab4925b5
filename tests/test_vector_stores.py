"""Qdrant and Pinecone stores beyond the shared contract: missing extras, unreachable servers, the API key, the
store benchmark on a small size, and a live Pinecone check that runs only when PINECONE_API_KEY and
PINECONE_INDEX_HOST are set."""
import importlib
import os
import pickle
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import store_factories

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize('module,make,extra', [
    ('qdrant_client', lambda: importlib.import_module('qstore.storage.qdrant').QdrantStore(), 'qdrant'),
    ('pinecone', lambda: importlib.import_module('qstore.storage.pinecone').PineconeStore('http://127.0.0.1:9'),
     'pinecone'),
])
def test_missing_extra_names_the_pip_install(monkeypatch, module, make, extra):
    monkeypatch.setitem(sys.modules, module, None)  # `import module` now raises ImportError
    with pytest.raises(ImportError, match=rf"pip install 'qstore\[{extra}\]'"):
        make()


@pytest.mark.parametrize('open_store', [
    lambda url: importlib.import_module('qstore.storage.qdrant').QdrantStore(url, timeout=2),
    lambda url: importlib.import_module('qstore.storage.pinecone').PineconeStore(url, timeout=2),
])
def test_unreachable_server_fails_fast_naming_the_host(open_store):
    pytest.importorskip('qdrant_client')
    pytest.importorskip('pinecone')
    t = time.perf_counter()
    with pytest.raises(ConnectionError, match='cannot reach 127.0.0.1:9 ') as e:
        open_store('http://user:secret@127.0.0.1:9')
    assert time.perf_counter() - t < 3 and 'secret' not in str(e.value)


def test_pinecone_key_never_leaves_the_environment(tmp_path):
    store = store_factories.pinecone_store(tmp_path, 'cosine')
    key = os.environ[store_factories.FAKE_KEY_ENV]
    try:
        store.upsert(['a'], np.ones((1, 8)), [{'k': 'v'}])
        assert key not in repr(store) and key.encode() not in pickle.dumps(store)
        assert key not in str(vars(store))  # not kept on the store object (the SDK client holds it)
    finally:
        store.close()


def test_pinecone_bad_input_sends_nothing(tmp_path):
    store = store_factories.pinecone_store(tmp_path, 'euclidean')
    fake = store_factories.pinecone_fake()
    try:
        store.upsert(['a'], np.ones((1, 8)))
        before = fake.requests
        for bad in (lambda: store.upsert(['a', 'a'], np.ones((2, 8))), lambda: store.upsert(['b'], np.ones((1, 9))),
                    lambda: store.upsert(['b'], np.ones((1, 8)), [{'n': [1]}])):
            with pytest.raises((ValueError, TypeError)):
                bad()
        assert fake.requests - before <= 3 and store.count() == 1  # only describe_index_stats calls went out
    finally:
        store.close()


def test_qdrant_local_directory_is_one_client_at_a_time(tmp_path):
    pytest.importorskip('qdrant_client')
    from qstore.storage.qdrant import QdrantStore
    with QdrantStore(tmp_path / 'q') as a:
        a.upsert(['x'], np.ones((1, 3)))
        with pytest.raises(RuntimeError, match='already accessed'):
            QdrantStore(tmp_path / 'q')


def test_store_benchmark_small(bench_script):
    stores = bench_script('stores')
    rows = stores.store_benchmark(n=300, d=8, queries=6, budget=5)
    by_name = {(r['store'], r['metric']): r for r in rows}
    for name in ('sqlite-memory', 'sqlite-file'):
        r = by_name[(name, 'euclidean')]
        assert r['recall'] == 1.0 and r['filt_recall'] == 1.0 and r['filt_k'] == 1.0 and r['queries'] == 6
    assert all(r.get('recall', 1.0) > 0.99 for r in rows)  # every available store searches exactly here


@pytest.mark.skipif(not (os.getenv('PINECONE_API_KEY') and os.getenv('PINECONE_INDEX_HOST')),
                    reason='live Pinecone check: set PINECONE_API_KEY and PINECONE_INDEX_HOST')
def test_live_pinecone_round_trip():
    "Against a real index: writes become visible (Pinecone is eventually consistent, so poll), then clean up."
    from qstore.storage.pinecone import PineconeStore
    store = PineconeStore(os.environ['PINECONE_INDEX_HOST'])
    ns = f"qstore-test-{uuid.uuid4().hex[:8]}"
    X = np.random.default_rng(0).normal(size=(5, store.dimension)).astype(np.float32)
    try:
        store.upsert([f"v{i}" for i in range(5)], X, [{'i': i} for i in range(5)], namespace=ns)
        deadline = time.time() + 60
        while store.count(namespace=ns) < 5 and time.time() < deadline: time.sleep(1)
        assert store.count(namespace=ns) == 5
        assert store.query(X[2], top_k=1, namespace=ns)[0].id == 'v2'
        np.testing.assert_array_equal(store.fetch(['v3'], namespace=ns)['v3'].values, X[3])
    finally:
        store.delete(delete_all=True, namespace=ns)
        store.close()
