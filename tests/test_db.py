"""Embedded database layer: SQLite specifics of the vector store, crash safety, datasets and the loader,
the model registry, metrics, and the `Database` facade. The store contract itself is in test_store_contract.py."""
import json
import os
import pickle
import signal
import sqlite3
import subprocess
import sys
import time

import numpy as np
import pytest

from qstore.storage.db import (STAGES, DataLoader, Database, MetricsStore, ModelRegistry, TrainingDataStore,
                               qstore_home,
                       resolve_callable, train_val_split)
from qstore.storage.files import REDACTED, CorruptStoreError, NotFoundError, atomic_write_bytes, file_sha256
from qstore.storage.sqlite import SQLiteDatabase
from qstore.storage.vectors import SQLiteVectorStore
from pg_util import fresh_schema_url

PY = sys.executable


# --- SQLite vector store specifics ----------------------------------------------------------------

def test_cache_sees_writes_of_another_connection(tmp_path):
    a, b = SQLiteVectorStore(tmp_path / 'v.db'), SQLiteVectorStore(tmp_path / 'v.db')
    X = np.random.default_rng(0).normal(size=(20, 4)).astype(np.float32)
    a.upsert([f"x{i}" for i in range(20)], X)
    assert b.query(X[3], top_k=1)[0].id == 'x3'
    a.delete(['x3'])
    assert b.query(X[3], top_k=1)[0].id != 'x3'
    a.upsert(['x3'], X[3:4], [{'back': True}])
    hit = b.query(X[3], top_k=1)[0]
    assert hit.id == 'x3' and hit.metadata == {'back': True}
    # writes to other tables of the same file do not invalidate the cache
    cached = b._cache['']
    with a.db.transaction(write=True) as c: c.execute('CREATE TABLE unrelated(x)')
    b.query(X[0])
    assert b._cache[''] is cached
    a.close()
    b.close()


def test_corrupt_vector_row_and_file_are_named(tmp_path):
    path = tmp_path / 'v.db'
    s = SQLiteVectorStore(path)
    s.upsert(['good', 'bad'], np.ones((2, 4)))
    with sqlite3.connect(path) as con:
        con.execute("UPDATE vectors SET vector = x'00000000' WHERE id = 'bad'")
    with pytest.raises(CorruptStoreError, match=r"vector 'bad' .* has 4 bytes, expected 16"):
        s.query(np.ones(4))
    s.close()
    junk = tmp_path / 'junk.db'
    junk.write_bytes(os.urandom(8192))
    with pytest.raises(CorruptStoreError, match=str(junk)):
        SQLiteVectorStore(junk)


def test_schema_version_mismatch_is_refused(tmp_path):
    s = SQLiteVectorStore(tmp_path / 'v.db')
    s.close()
    with sqlite3.connect(tmp_path / 'v.db') as con:
        con.execute("UPDATE qstore_schema SET version = 99 WHERE component = 'vectors'")
    with pytest.raises(RuntimeError, match="'vectors' tables have schema version 99"):
        SQLiteVectorStore(tmp_path / 'v.db')


def test_exact_search_matches_brute_force_at_20k(tmp_path):
    "20k x 32: exact top-10 for a batch of 32 queries matches brute force (latency is measured in bench/, not here)."
    X = np.random.default_rng(3).normal(size=(20_000, 32)).astype(np.float32)
    s = SQLiteVectorStore(tmp_path / 'v.db', metric='euclidean')
    s.upsert([str(i) for i in range(len(X))], X)
    q = X[:32] + 0.01
    s.query(q[0])  # load the cache
    res = s.query(q, top_k=10)
    ref = np.argsort(((q[:, None] - X[None]) ** 2).sum(-1), axis=1)[:, :10]
    assert [[int(m.id) for m in r] for r in res] == ref.tolist()
    s.close()


def test_large_query_batches_are_scored_in_blocks(tmp_path, monkeypatch):
    import qstore.storage.vectors as store_mod
    X = np.random.default_rng(4).normal(size=(300, 8)).astype(np.float32)
    s = SQLiteVectorStore(':memory:', metric='dot')
    s.upsert([str(i) for i in range(300)], X, [{'even': i % 2 == 0} for i in range(300)])
    q = np.random.default_rng(5).normal(size=(50, 8))
    whole = s.query(q, top_k=5, filter={'even': True})
    monkeypatch.setattr(store_mod, '_SCORE_BLOCK', 300 * 3)  # 3 queries per block
    blocked = s.query(q, top_k=5, filter={'even': True})
    assert [[m.id for m in r] for r in blocked] == [[m.id for m in r] for r in whole]
    np.testing.assert_allclose([[m.score for m in r] for r in blocked], [[m.score for m in r] for r in whole],
                               rtol=1e-5)
    s.close()


# --- crash safety ---------------------------------------------------------------------------------

CRASH_WRITER = """
import sys
from qstore.storage.files import atomic_write_bytes
path = sys.argv[1]
i = 0
while True:
    i += 1
    atomic_write_bytes(path, bytes([i % 256]) * 4_000_000)
"""


def test_atomic_write_survives_sigkill(tmp_path):
    target = tmp_path / 'ckpt.bin'
    atomic_write_bytes(target, b'\x00' * 4_000_000)
    rng = np.random.default_rng(0)
    for _ in range(3):
        p = subprocess.Popen([PY, '-c', CRASH_WRITER, str(target)])
        time.sleep(0.35 + rng.uniform(0, 0.2))  # past the interpreter start, somewhere inside the write loop
        p.send_signal(signal.SIGKILL)
        p.wait()
        data = target.read_bytes()
        assert len(data) == 4_000_000 and data == data[:1] * len(data)  # one complete version, never torn
    # the killed writers' temp files are debris that a later open removes
    from qstore.storage.files import remove_stale_temp_files
    remove_stale_temp_files(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ['ckpt.bin']


# --- datasets ------------------------------------------------------------------------------------

@pytest.fixture(params=['sqlite', 'postgres'])
def sql_db(request):
    "`sql_db(sqlite_arg)`: on SQLite the argument as given; on PostgreSQL a new connection to this test's own schema."
    if request.param == 'sqlite':
        yield lambda sqlite_arg=None: sqlite_arg
        return
    from qstore.storage.postgres import PostgresDatabase
    url, opened = fresh_schema_url(), []

    def connect(sqlite_arg=None):
        opened.append(PostgresDatabase(url))
        return opened[-1]
    yield connect
    for db in opened: db.close()


@pytest.fixture
def datasets(tmp_path, sql_db):
    s = TrainingDataStore(tmp_path, sql_db())
    yield s
    s.close()


def test_dataset_roundtrip_dtypes_and_labels(datasets):
    rng = np.random.default_rng(0)
    X64, X32 = rng.normal(size=(12, 3)), rng.normal(size=(7, 2)).astype(np.float32)
    ys = np.array(list('abcabcabcabc'))
    assert datasets.put_dataset('a', X64, ys, {'source': 'test', 'classes': ['a', 'b', 'c']}) == 1
    assert datasets.put_dataset('b', X32) == 1
    a, b = datasets.get_dataset('a'), datasets.get_dataset('b')
    np.testing.assert_array_equal(a.X, X64)
    assert a.X.dtype == np.float64 and b.X.dtype == np.float32
    np.testing.assert_array_equal(a.y, ys)
    assert b.y is None and a.metadata == {'source': 'test', 'classes': ['a', 'b', 'c']}
    assert isinstance(a.X, np.memmap) and not a.X.flags.writeable
    Xa, ya = a.arrays()
    assert not isinstance(Xa, np.memmap)
    np.testing.assert_array_equal(ya, ys)
    assert datasets.put_dataset('h', np.ones((2, 2), np.float16)) == 1
    assert datasets.get_dataset('h').X.dtype == np.float32


def test_dataset_versions_dedupe_and_listing(datasets):
    X = np.arange(12.0).reshape(6, 2)
    y = np.arange(6)
    assert datasets.put_dataset('d', X, y) == 1
    assert datasets.put_dataset('d', X, y) == 1  # identical: same version, no new files
    assert datasets.put_dataset('d', X, y, {'note': 'changed metadata'}) == 2
    assert datasets.put_dataset('d', X * 2, y) == 3
    assert datasets.put_dataset('d', X * 2, y, dedupe=False) == 4
    assert datasets.versions('d') == [1, 2, 3, 4]
    np.testing.assert_array_equal(datasets.get_dataset('d', 1).X, X)
    np.testing.assert_array_equal(datasets.get_dataset('d').X, X * 2)
    assert datasets.get_dataset('d', 'latest').version == 4
    assert [(i.name, i.version, i.n_rows) for i in datasets.list_datasets()][:2] == [('d', 1, 6), ('d', 2, 6)]
    assert len(list((datasets.root / 'datasets' / 'd').iterdir())) == 4
    with pytest.raises(NotFoundError, match=r"no version 9; versions: \[1, 2, 3, 4\]"):
        datasets.get_dataset('d', 9)
    with pytest.raises(NotFoundError, match=r"no dataset named 'zzz'; datasets: \['d'\]"):
        datasets.get_dataset('zzz')


def test_dataset_validation_names_bad_rows(datasets):
    X = np.ones((10, 3))
    X[6, 1] = np.nan
    X[8, 0] = np.inf
    with pytest.raises(ValueError, match=r'X row 6 contains NaN or inf \(2 bad row'):
        datasets.put_dataset('x', X)
    with pytest.raises(ValueError, match='y row 2 is NaN'):
        datasets.put_dataset('x', np.ones((4, 2)), np.array([0, 1, np.nan, 1]))
    with pytest.raises(TypeError, match='float32 or float64'):
        datasets.put_dataset('x', np.ones((4, 2), dtype=np.int32))
    with pytest.raises(TypeError, match='numbers, bools or strings'):
        datasets.put_dataset('x', np.ones((2, 2)), np.array([{}, {}], dtype=object))
    with pytest.raises(ValueError, match='must be 2-D'):
        datasets.put_dataset('x', np.ones((2, 2, 2)))
    with pytest.raises(ValueError, match='is not allowed'):
        datasets.put_dataset('../escape', np.ones((2, 2)))
    assert datasets.list_datasets() == []


def test_dataset_corruption_is_detected(datasets):
    X = np.random.default_rng(1).normal(size=(50, 4))
    datasets.put_dataset('c', X, np.arange(50))
    d = datasets.get_dataset('c')
    xfile = next((datasets.root / 'datasets' / 'c').iterdir()) / 'X.npy'
    del d
    raw = bytearray(xfile.read_bytes())
    raw[-3] ^= 0xFF  # flip bits in the data: the header still parses, the shape still matches
    xfile.write_bytes(bytes(raw))
    datasets.get_dataset('c')  # unverified reads stay cheap
    with pytest.raises(CorruptStoreError, match=f"{xfile}: sha256 does not match"):
        datasets.get_dataset('c', verify=True)
    xfile.write_bytes(bytes(raw[:200]))  # truncated
    with pytest.raises(CorruptStoreError, match=str(xfile)):
        datasets.get_dataset('c')
    xfile.unlink()
    with pytest.raises(CorruptStoreError, match=f"{xfile}: file is missing"):
        datasets.get_dataset('c')


def test_splits_seeded_stratified_and_nested(datasets):
    y = np.repeat([0, 1, 2, 3], [40, 30, 20, 10])
    X = np.random.default_rng(0).normal(size=(100, 2))
    datasets.put_dataset('s', X, y)
    d = datasets.get_dataset('s')
    tr, va = d.split(0.2, seed=5, stratify=True)
    assert np.bincount(va.arrays()[1]).tolist() == [8, 6, 4, 2]
    assert sorted(np.concatenate([tr.rows, va.rows]).tolist()) == list(range(100))
    tr2, va2 = d.split(0.2, seed=5, stratify=True)
    np.testing.assert_array_equal(va.rows, va2.rows)
    assert not np.array_equal(d.split(0.2, seed=6)[1].rows, d.split(0.2, seed=5)[1].rows)
    inner_tr, inner_va = tr.split(0.25, seed=0)  # split of a split stays inside it
    assert set(inner_va.rows) <= set(tr.rows) and len(inner_va) == 20
    np.testing.assert_array_equal(inner_va.arrays()[0], X[inner_va.rows])
    with pytest.raises(ValueError, match='stratify=True needs'):
        train_val_split(np.linspace(0, 1, 10), 0.2, stratify=True)
    with pytest.raises(ValueError, match='between 0 and 1'):
        train_val_split(10, 1.5)


def collect(loader, epochs):
    return [(xb.copy(), None if yb is None else yb.copy()) for _ in range(epochs) for xb, yb in loader]


def test_loader_batches_are_deterministic_and_cover_epochs(datasets, sql_db):
    X = np.random.default_rng(0).normal(size=(23, 3))
    datasets.put_dataset('l', X, np.arange(23))
    a = collect(datasets.get_dataset('l').loader(batch_size=4, seed=11), 3)
    # another connection
    b = collect(TrainingDataStore(datasets.root, sql_db()).get_dataset('l').loader(batch_size=4, seed=11), 3)
    assert len(a) == 3 * 6
    assert all(np.array_equal(x1, x2) and np.array_equal(y1, y2) for (x1, y1), (x2, y2) in zip(a, b))
    for e in range(3):
        ys = np.concatenate([y for _, y in a[6 * e:6 * e + 6]])
        assert sorted(ys.tolist()) == list(range(23))  # every row once per epoch
        np.testing.assert_array_equal(np.concatenate([x for x, _ in a[6 * e:6 * e + 6]]), X[ys])
    c = collect(datasets.get_dataset('l').loader(batch_size=4, seed=12), 1)
    assert not np.array_equal(np.concatenate([y for _, y in c]), np.concatenate([y for _, y in a[:6]]))
    seq = collect(DataLoader(X, None, batch_size=10, shuffle=False, drop_last=True), 2)
    assert len(seq) == 4 and seq[0][1] is None
    np.testing.assert_array_equal(np.concatenate([x for x, _ in seq[:2]]), X[:20])


@pytest.mark.parametrize('batch_size,drop_last,subset', [(4, False, False), (5, True, False), (3, False, True)])
def test_loader_resume_is_bit_exact_at_every_position(batch_size, drop_last, subset):
    rng = np.random.default_rng(2)
    X, y = rng.normal(size=(17, 2)), rng.integers(0, 5, 17)
    rows = np.array([0, 2, 3, 5, 8, 9, 11, 12, 15, 16]) if subset else None
    make = lambda seed: DataLoader(X, y, batch_size=batch_size, seed=seed, drop_last=drop_last, rows=rows)
    ref_loader = make(42)
    per_epoch = len(ref_loader)
    reference, states = [], []
    for _ in range(3):
        for xb, yb in ref_loader:
            reference.append((xb, yb))
            states.append(json.loads(json.dumps(ref_loader.state_dict())))  # what a checkpoint would hold
    states.insert(0, make(42).state_dict())
    for k, state in enumerate(states):  # resume after k batches
        resumed = make(seed=0)
        resumed.load_state_dict(state)
        rest = [b for _ in range(4) for b in resumed][:len(reference) - k]
        assert len(rest) == len(reference) - k
        for (x1, y1), (x2, y2) in zip(rest, reference[k:]):
            assert x1.tobytes() == x2.tobytes() and y1.tobytes() == y2.tobytes()
        assert resumed.epoch >= (len(reference) // per_epoch) - 1


def test_loader_state_mismatch_errors():
    X = np.ones((10, 2))
    state = DataLoader(X, batch_size=3).state_dict()
    with pytest.raises(ValueError, match='different shuffle'):
        DataLoader(X, batch_size=3, shuffle=False).load_state_dict(state)
    with pytest.raises(ValueError, match='different n_rows, rows_sha256'):
        DataLoader(X, batch_size=3, rows=[1, 2, 3]).load_state_dict(state)
    with pytest.raises(ValueError, match='batch_size must be a positive integer'):
        DataLoader(X, batch_size=0)
    with pytest.raises(ValueError, match='no batch'):
        DataLoader(X, batch_size=20, drop_last=True)


# --- model registry ------------------------------------------------------------------------------

class TinyModel:
    "A test factory: the spec gives the shape, the checkpoint the weights."
    def __init__(self, n):
        self.weights = np.zeros(n)

    @classmethod
    def from_spec(cls, spec):
        return cls(spec['n'])

    def load_weights(self, path):
        self.weights = np.load(path)


def tiny_loader_returning_new(model, path):
    fresh = TinyModel(len(model.weights))
    fresh.weights = np.load(path) * 10
    return fresh


SPEC = {'factory': f'{__name__}:TinyModel.from_spec', 'loader': f'{__name__}:TinyModel.load_weights', 'n': 3}
TRUSTED = {SPEC['factory']: TinyModel.from_spec, SPEC['loader']: TinyModel.load_weights}  # load's allow-list


@pytest.fixture
def registry(tmp_path, sql_db):
    r = ModelRegistry(tmp_path / 'home', sql_db())
    yield r
    r.close()


def write_ckpt(path, w):
    np.save(path, np.asarray(w, dtype=float))
    return path


def test_registry_versions_stages_and_load(registry, tmp_path, sql_db):
    ck = tmp_path / 'ckpt.npy'
    assert registry.register('m', SPEC, write_ckpt(ck, [1, 2, 3]), {'acc': 0.5}, {'data': 'iris'}) == 1
    assert registry.register('m', SPEC, write_ckpt(ck, [4, 5, 6]), {'acc': 0.7}, {'data': 'wine'}, stage='staging') == 2
    assert registry.register('m', SPEC, write_ckpt(ck, [7, 8, 9]), {'acc': 0.9}, stage='production') == 3
    assert registry.register('other', {'factory': SPEC['factory'], 'n': 2}) == 1
    # its own copy, though ckpt.npy changed
    np.testing.assert_array_equal(registry.load('m', 1, factories=TRUSTED).weights, [1, 2, 3])
    np.testing.assert_array_equal(registry.load('m', factories=TRUSTED).weights, [7, 8, 9])
    np.testing.assert_array_equal(registry.load('m', 'staging', factories=TRUSTED).weights, [4, 5, 6])
    np.testing.assert_array_equal(registry.load('other', factories=TRUSTED).weights, [0, 0])  # spec only, no checkpoint
    assert registry.get('m', 'production').version == 3
    registry.promote('m', 2, 'production')
    assert [(v.version, v.stage) for v in registry.list('m')] == [(1, 'none'), (2, 'production'), (3, 'archived')]
    assert [v.version for v in registry.list(stage='production')] == [2]
    tagged = registry.list(tags={'data': {'$in': ['iris', 'wine']}})
    assert [(v.name, v.version) for v in tagged] == [('m', 1), ('m', 2)]
    assert registry.names() == ['m', 'other']
    mv = registry.get('m', 1)
    assert mv.metrics == {'acc': 0.5} and mv.tags == {'data': 'iris'} and mv.sha256 == file_sha256(mv.checkpoint)
    assert mv.checkpoint.is_relative_to(registry.root)
    # a loader may return a new object
    override = registry.load('m', 1, loader=tiny_loader_returning_new, factories=TRUSTED)
    np.testing.assert_array_equal(override.weights, [10, 20, 30])
    reopened = ModelRegistry(registry.root, sql_db())
    assert reopened.get('m', 'production').version == 2
    reopened.close()
    assert STAGES == ('none', 'staging', 'production', 'archived')


def test_registry_reference_in_place_detects_modification(registry, tmp_path):
    ck = write_ckpt(tmp_path / 'w.npy', [1, 2, 3])
    v = registry.register('ref', SPEC, ck, copy=False)
    assert registry.get('ref', v).checkpoint == ck.resolve()
    np.testing.assert_array_equal(registry.load('ref', factories=TRUSTED).weights, [1, 2, 3])
    write_ckpt(ck, [0, 0, 0])
    with pytest.raises(CorruptStoreError, match=f"{ck.resolve()}: sha256 differs"):
        registry.load('ref', factories=TRUSTED)
    np.testing.assert_array_equal(registry.load('ref', verify=False, factories=TRUSTED).weights, [0, 0, 0])
    ck.unlink()
    with pytest.raises(CorruptStoreError, match='is missing'):
        registry.load('ref', factories=TRUSTED)


def test_registry_errors_and_redaction(registry, tmp_path):
    ck = write_ckpt(tmp_path / 'w.npy', [1, 2, 3])
    cases = [
        (lambda: registry.register('m', {'n': 3}), "'factory' import path"),
        (lambda: registry.register('m', {'factory': 'no_colon_here'}), "must look like 'package.module:Name'"),
        (lambda: registry.register('m', {'factory': 'qstore_nope_module:X'}),
         "cannot import module 'qstore_nope_module'"),
        (lambda: registry.register('m', {'factory': f'{__name__}:TinyModel.nope'}), "has no attribute 'nope'"),
        (lambda: registry.register('m', {'factory': f'{__name__}:SPEC'}), 'not callable'),
        (lambda: registry.register('m', {'factory': SPEC['factory']}, ck), "needs model_spec['loader']"),
        (lambda: registry.register('m', SPEC, tmp_path / 'missing.npy'), 'is not a file'),
        (lambda: registry.register('m', SPEC, stage='prod'), "unknown stage 'prod'"),
        (lambda: registry.register('m', SPEC, tags={'nested': {'a': 1}}), 'flatten nested'),
        (lambda: registry.get('nothing'), "no model named 'nothing'"),
        (lambda: registry.get('m', 'best'), "version must be an int, 'latest' or a stage"),
    ]
    for fn, msg in cases:
        with pytest.raises(Exception) as e:
            fn()
        assert msg in str(e.value), (msg, str(e.value))
    assert registry.list() == []
    v = registry.register('m', {**SPEC, 'backend': {'name': 'ionq', 'api_key': 'sk-live-1234'}})
    stored = registry.db.conn.execute('SELECT spec FROM models').fetchone()[0]
    assert 'sk-live-1234' not in stored and registry.get('m', v).spec['backend']['api_key'] == REDACTED
    assert resolve_callable('json:dumps') is json.dumps


# --- metrics -------------------------------------------------------------------------------------

def test_metrics_runs_history_and_kinds(tmp_path, sql_db):
    ms = MetricsStore(sql_db(tmp_path / 'm.db'), flush_every=1000, flush_interval=3600)
    run = ms.start_run('train-1', {'lr': 0.05, 'layers': 2})
    for step in range(6):
        ms.log(run, step=step, epoch=step // 3, loss=1.0 / (step + 1),
               grad_method='spsa' if step % 2 else 'parameter_shift',
               circuits_executed=np.int64(4 * step), wall_time=np.float32(0.5),
               cache={'hits': step, 'misses': 6 - step},
               pipeline={'queue': {'depth': 2}})
        if step % 3 == 2:
            ms.log(run, epoch=step // 3, val_loss=0.3 - 0.1 * (step // 3), val_acc=0.8)
    assert ms.db.conn.execute('SELECT COUNT(*) FROM metrics').fetchone()[0] == 0  # still buffered
    h = ms.history(run)
    assert len(h['time']) == 8
    steps = ms.history(run, kind='step')
    assert steps['step'].tolist() == list(range(6)) and steps['epoch'].tolist() == [0, 0, 0, 1, 1, 1]
    np.testing.assert_allclose(steps['loss'], 1 / np.arange(1, 7))
    assert steps['circuits_executed'].dtype == np.int64 and steps['circuits_executed'].tolist() == [0, 4, 8, 12, 16, 20]
    assert steps['grad_method'].tolist()[:2] == ['parameter_shift', 'spsa']
    assert steps['cache.misses'].tolist() == [6, 5, 4, 3, 2, 1] and steps['pipeline.queue.depth'].tolist() == [2] * 6
    epochs = ms.history(run, kind='epoch')
    assert epochs['epoch'].tolist() == [0, 1] and np.isnan(epochs['step']).all()
    np.testing.assert_allclose(epochs['val_loss'], [0.3, 0.2])
    only = ms.history(run, names=['val_acc', 'loss'])
    assert list(only) == ['step', 'epoch', 'time', 'val_acc', 'loss'] and len(only['time']) == 8
    assert np.isnan(only['val_acc']).sum() == 6
    assert ms.records(run, kind='epoch')[1]['val_acc'] == 0.8
    ms.end_run(run, 'failed')
    r = ms.get_run(run)
    assert (r.status, r.n_records, r.config) == ('failed', 8, {'layers': 2, 'lr': 0.05})
    assert r.ended >= r.started
    ms.close()


def test_metrics_batching_resume_and_errors(tmp_path, sql_db):
    ms = MetricsStore(sql_db(tmp_path / 'm.db'), flush_every=3, flush_interval=3600)
    count = lambda: ms.db.conn.execute('SELECT COUNT(*) FROM metrics').fetchone()[0]
    run = ms.start_run('r', {'seed': 1, 'token': 'abc'})
    for i in range(5): ms.log(run, step=i, loss=float(i))
    assert count() == 3  # one batched insert of 3, 2 waiting
    ms.flush()
    assert count() == 5
    timed = MetricsStore(ms.db, flush_every=1000, flush_interval=0.0)  # interval elapsed at every log: write-through
    timed.log(run, step=5, loss=5.0)
    assert count() == 6
    with pytest.raises(ValueError, match='resume=True'):
        ms.start_run('r')
    with pytest.raises(ValueError, match='different config'):
        ms.start_run('r', {'seed': 2}, resume=True)
    assert ms.start_run('r', {'seed': 1, 'token': 'other'}, resume=True) == 'r'  # secrets are redacted before comparing
    assert ms.get_run('r').config['token'] == REDACTED and ms.get_run('r').status == 'running'
    auto = ms.start_run(config={})
    assert [x.run for x in ms.runs()] == ['r', auto]
    ms.end_run(auto)
    assert [x.run for x in ms.runs(status='finished')] == [auto]
    bad = [
        (lambda: ms.log('ghost', loss=1), "unknown run 'ghost'"),
        (lambda: ms.log(run, step=1), 'at least one metric'),
        (lambda: ms.log(run, step=-1, loss=1), 'step must be a non-negative integer'),
        (lambda: ms.log(run, weights=np.ones(3)), 'save arrays in a checkpoint'),
        (lambda: ms.log(run, time=1.0), "'time' is reserved"),
        (lambda: ms.end_run(run, 'done'), 'status must be one of'),
        (lambda: ms.history(run, kind='batch'), "kind must be None, 'step' or 'epoch'"),
        (lambda: ms.get_run('ghost'), "unknown run 'ghost'"),
    ]
    for fn, msg in bad:
        with pytest.raises(Exception) as e:
            fn()
        assert msg in str(e.value), (msg, str(e.value))
    ms.close()


EXIT_LOGGER = """
import sys
from qstore.storage.db import MetricsStore
ms = MetricsStore(sys.argv[1], flush_every=10_000, flush_interval=3600)
run = ms.start_run('exiting')
for i in range(7): ms.log(run, step=i, loss=i / 10)
# no flush, no close: the interpreter-exit finaliser writes the buffer
"""


def test_metrics_buffer_is_flushed_at_interpreter_exit(tmp_path):
    subprocess.run([PY, '-c', EXIT_LOGGER, str(tmp_path / 'm.db')], check=True)
    ms = MetricsStore(tmp_path / 'm.db')
    assert ms.history('exiting')['step'].tolist() == list(range(7))
    ms.close()


# --- Database facade -----------------------------------------------------------------------------

def test_database_urls_and_persistence(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with Database.open('sqlite:///rel/home/qstore.db') as db:  # three slashes: relative; the URL names the file
        assert db.root == tmp_path / 'rel' / 'home'
        db.vectors.upsert(['a'], [[1.0, 2.0]])
        db.datasets.put_dataset('d', np.ones((2, 2)), [0, 1])
        db.models.register('m', {'factory': SPEC['factory'], 'n': 1})
        run = db.metrics.start_run('r')
        db.metrics.log(run, step=0, loss=0.1)
    assert (tmp_path / 'rel' / 'home' / 'qstore.db').is_file()
    con = sqlite3.connect(tmp_path / 'rel' / 'home' / 'qstore.db')
    tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {'vectors', 'datasets', 'models', 'runs', 'metrics'} <= tables  # one file for everything
    with Database.open(f'sqlite:///{tmp_path}/rel/home/qstore.db') as db:  # four slashes: absolute
        assert db.vectors.count() == 1 and db.datasets.versions('d') == [1] and db.models.get('m').version == 1
        assert db.metrics.history('r')['loss'].tolist() == [0.1]
    monkeypatch.delenv('QSTORE_HOME', raising=False)
    assert qstore_home() == tmp_path / '.qstore'
    with Database.open() as db:
        assert db.root == tmp_path / '.qstore'
    monkeypatch.setenv('QSTORE_HOME', str(tmp_path / 'envhome'))
    with Database.open() as db:
        assert db.root == tmp_path / 'envhome'
        assert 'envhome' in repr(db)


def test_database_memory_and_errors(tmp_path):
    for url in ('sqlite://', 'sqlite:///:memory:'):
        with Database.open(url) as db:
            root = db.root
            db.datasets.put_dataset('d', np.ones((3, 1)))
            assert db.datasets.get_dataset('d').X.shape == (3, 1)
            assert not (tmp_path / 'qstore.db').exists()
        assert not root.exists()
    with pytest.raises(ValueError) as e:
        Database.open('mysql://alice:s3cret@db.example/qstore')
    assert "unsupported database URL scheme 'mysql'" in str(e.value) and 'sqlite://' in str(e.value)
    assert 's3cret' not in str(e.value) and 'alice' not in str(e.value)
    with pytest.raises(ValueError, match='have no host'):
        Database.open('sqlite://somehost/x')
    (tmp_path / 'afile').write_text('x')
    with pytest.raises(NotADirectoryError, match='is a file'):
        Database.open(tmp_path / 'afile')
    home = tmp_path / 'home'
    home.mkdir()
    (home / 'qstore.db').write_bytes(b'garbage' * 1000)
    with pytest.raises(CorruptStoreError, match=str(home / 'qstore.db')):
        Database.open(home)


def test_database_open_removes_crash_debris(tmp_path):
    debris = tmp_path / 'datasets' / 'd' / '.tmp-999999999-abc'
    debris.parent.mkdir(parents=True)
    debris.write_bytes(b'partial')
    Database.open(tmp_path).close()
    assert not debris.exists()


def test_database_stores_are_picklable_to_workers(tmp_path):
    with Database.open(tmp_path) as db:
        db.vectors.upsert(['a', 'b'], [[1.0, 0.0], [0.0, 1.0]])
        twin = pickle.loads(pickle.dumps(db.vectors))
        assert twin.query([0.9, 0.1], top_k=1)[0].id == 'a'
        twin.close()
        other = SQLiteDatabase(tmp_path / 'qstore.db')
        assert other.conn.execute('SELECT COUNT(*) FROM vectors').fetchone()[0] == 2
        other.close()
