"""PostgreSQL: `PgVectorStore` beyond the shared contract (indexes, iterative scans, COPY loads, restarts mid-load),
`Database` on a postgresql:// URL with two trainer processes, and the errors that need no server."""
import os
import shlex
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

from pg_util import fresh_schema_url, pg_url

PY = sys.executable


# --- errors that need no server ------------------------------------------------------------------

def test_missing_extra_names_the_pip_install(monkeypatch):
    monkeypatch.setitem(sys.modules, 'psycopg', None)  # import psycopg now raises ImportError
    from qstore.storage.db import Database
    from qstore.storage.pgvector import PgVectorStore
    for fn in (lambda: PgVectorStore('postgresql://db.example/x'), lambda: Database.open('postgresql://db.example/x')):
        with pytest.raises(ImportError, match=r"pip install 'qstore\[pgvector\]'"):
            fn()


def test_missing_pgvector_adapter_names_the_pip_install(monkeypatch):
    pytest.importorskip('psycopg')
    monkeypatch.setitem(sys.modules, 'pgvector.psycopg', None)
    from qstore.storage.pgvector import PgVectorStore
    with pytest.raises(ImportError, match=r"pgvector's Python adapter: pip install 'qstore\[pgvector\]'"):
        PgVectorStore('postgresql://db.example/x')


def test_unreachable_server_fails_fast_naming_the_host():
    pytest.importorskip('psycopg')
    from qstore.storage.db import Database
    from qstore.storage.pgvector import PgVectorStore
    for fn in (lambda: PgVectorStore('postgresql://alice:s3cret@127.0.0.1:1/vectors'),
               lambda: Database.open('postgresql://alice:s3cret@127.0.0.1:1/vectors')):
        t0 = time.monotonic()
        with pytest.raises(ConnectionError) as e:
            fn()
        assert time.monotonic() - t0 < 5
        assert 'cannot connect to PostgreSQL at 127.0.0.1:1/vectors' in str(e.value)
        assert 's3cret' not in str(e.value) and 'alice' not in str(e.value)


# --- PgVectorStore ---------------------------------------------------------------------------------

@pytest.fixture
def pg_store():
    from qstore.storage.pgvector import PgVectorStore
    opened = []

    def make(**kw):
        opened.append(PgVectorStore(fresh_schema_url(), **kw))
        return opened[-1]
    yield make
    for s in opened: s.close()


def clustered(n, d, seed=0):
    "Vectors around 50 centres (real embeddings cluster; isotropic noise is ANN's worst case)."
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(50, d)) * 3
    return (centres[rng.integers(0, 50, n)] + rng.normal(size=(n, d))).astype(np.float32)


@pytest.mark.parametrize('metric', ['cosine', 'dot', 'euclidean'])
@pytest.mark.parametrize('kind', ['hnsw', 'ivfflat'])
def test_index_kinds_and_iterative_filtered_scans(pg_store, metric, kind):
    store = pg_store(metric=metric, ef_search=40, probes=16)  # ivfflat: 16 of 40 lists
    X = clustered(4000, 16)
    ids = [f"v{i}" for i in range(len(X))]
    store.upsert(ids, X, [{'label': i % 40} for i in range(len(X))])
    Q = clustered(20, 16, seed=1)
    exact = [[m.id for m in r] for r in store.query(Q, top_k=10, filter={'label': 7})]
    assert store.create_index(kind=kind, lists=40) == 'qstore_vectors_1_ann' and store.index_kind() == kind
    with store.db.transaction() as c:  # the planner uses the index for this metric's operator
        plan = '\n'.join(r[0] for r in c.pg.execute(
            f"EXPLAIN SELECT id FROM qstore_vectors_1 ORDER BY embedding {store_op(metric)} "
            f"'{ '[' + ','.join(['0.5'] * 16) + ']' }'::vector LIMIT 10").fetchall())
    assert 'qstore_vectors_1_ann' in plan, plan
    approx = store.query(Q, top_k=10, filter={'label': 7})
    # label 7 is 1 row in 40: without iterative scans an index scan of ef_search=40 rows would keep about one
    assert all(len(r) == 10 and {m.metadata['label'] for m in r} == {7} for r in approx)
    recall = np.mean([len({m.id for m in a} & set(e)) / 10 for a, e in zip(approx, exact)])
    assert recall >= 0.9, recall
    assert store.drop_index() and store.index_kind() is None and not store.drop_index()


def store_op(metric):
    from qstore.storage.pgvector import PG_METRICS
    return PG_METRICS[metric][0]


def test_copy_loads_merge_replace_and_analyze(pg_store):
    store = pg_store(metric='euclidean')
    X = clustered(3000, 8)
    ids = [f"v{i}" for i in range(3000)]
    assert store.upsert(ids, X, [{'i': i} for i in range(3000)]) == 3000  # COPY into the empty table
    # a second COPY load overlapping the first: 1000 replaced, 1000 new
    assert store.upsert(ids[2000:] + [f"w{i}" for i in range(1000)], -X[:2000], [{'second': True}] * 2000) == 2000
    assert store.count() == 4000 and store.count(filter={'second': True}) == 2000
    got = store.fetch(['v0', 'v2000', 'w999'])
    np.testing.assert_array_equal(got['v2000'].values, -X[0])
    np.testing.assert_array_equal(got['w999'].values, -X[1999])
    np.testing.assert_array_equal(got['v0'].values, X[0])
    assert got['v2000'].metadata == {'second': True} and got['v0'].metadata == {'i': 0}
    with store.db.transaction() as c:  # ANALYZE ran: the planner knows the row count
        (tuples,), = c.pg.execute("SELECT reltuples FROM pg_class WHERE oid = 'qstore_vectors_1'::regclass").fetchall()
    assert tuples == 4000
    assert store.describe().count == 4000


def test_query_before_insert_and_bad_input(pg_store):
    from qstore.storage.files import NotFoundError
    store = pg_store()
    with pytest.raises(NotFoundError, match="namespace '' does not exist"):
        store.query(np.ones(4))
    store.upsert(['a'], np.ones((1, 4)))
    with pytest.raises(ValueError, match="duplicate id 'b'"):
        store.upsert(['b', 'c', 'b'], np.ones((3, 4)))
    with pytest.raises(ValueError, match='dimension mismatch'):
        store.upsert(['d'], np.ones((1, 5)))
    with pytest.raises(ValueError, match="unknown index kind 'flat'"):
        store.create_index(kind='flat')
    with pytest.raises(ValueError, match='unknown metric'):
        type(store)(store.db, metric='hamming')
    assert store.count() == 1


# --- a server lost in the middle of a bulk load ----------------------------------------------------

def copy_running(store, timeout=30.0):
    "Wait until the store's connection is running a COPY."
    import psycopg
    deadline = time.monotonic() + timeout
    with psycopg.connect(pg_url(), autocommit=True) as watcher:
        while time.monotonic() < deadline:
            row = watcher.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s AND state = 'active' AND "
                                  "query LIKE 'COPY%%'", (store.db.conn.info.backend_pid,)).fetchone()
            if row: return True
            time.sleep(0.002)
    return False


def background_upsert(store, ids, X):
    out = {}

    def run():
        try: out['n'] = store.upsert(ids, X)
        except Exception as e: out['error'] = e
    t = threading.Thread(target=run)
    t.start()
    return t, out


def test_restart_mid_load_resumes_and_writes_every_row_once(pg_store):
    restart = os.environ.get('QSTORE_TEST_PG_RESTART')
    if not restart:
        if os.environ.get('QSTORE_REQUIRE_PG') == '1': pytest.fail('QSTORE_TEST_PG_RESTART is not set')
        pytest.skip('set QSTORE_TEST_PG_RESTART to a command restarting the test server (.ci/postgres.sh sets it)')
    store = pg_store(metric='euclidean')
    X = np.random.default_rng(0).normal(size=(60_000, 32)).astype(np.float32)
    ids = [f"r{i}" for i in range(len(X))]
    t, out = background_upsert(store, ids, X)
    assert copy_running(store)
    subprocess.run(shlex.split(restart), check=True, timeout=60)
    t.join(120)
    assert out == {'n': len(X)}, out  # the load ran again after the restart, as one transaction
    assert store.count() == len(X)
    sample = [0, 12345, len(X) - 1]
    got = store.fetch([ids[i] for i in sample])
    np.testing.assert_array_equal(np.stack([got[ids[i]].values for i in sample]), X[sample])
    with store.db.transaction() as c:  # one namespace table (the interrupted attempt's was rolled back), each row once
        tables = c.pg.execute("SELECT tablename FROM pg_tables WHERE schemaname = current_schema() "
                              "AND tablename LIKE 'qstore_vectors\\_%'").fetchall()
        assert len(tables) == 1
        assert c.pg.execute(f'SELECT COUNT(DISTINCT id), COUNT(*) FROM {tables[0][0]}').fetchone() == (len(X), len(X))


def test_connection_lost_twice_fails_cleanly_with_no_row_written(pg_store):
    import psycopg
    from qstore.storage.postgres import LostConnectionError
    store = pg_store()
    X = np.random.default_rng(1).normal(size=(60_000, 32)).astype(np.float32)
    t, out = background_upsert(store, [f"k{i}" for i in range(len(X))], X)
    for _ in range(2):  # the first loss is retried; the second one is reported
        assert copy_running(store)
        with psycopg.connect(pg_url(), autocommit=True) as admin:
            admin.execute('SELECT pg_terminate_backend(%s)', (store.db.conn.info.backend_pid,))
    t.join(120)
    assert isinstance(out.get('error'), LostConnectionError), out
    assert 'none of it was written' in str(out['error'])
    assert store.count() == 0 and store.describe() is None  # the namespace was created in the same transaction
    assert store.upsert(['after'], X[:1]) == 1  # the store reconnects for the next call


# --- Database on postgresql:// -----------------------------------------------------------------------

def test_database_on_postgres_url(tmp_path, monkeypatch):
    from qstore.storage.db import Database
    url = fresh_schema_url()
    monkeypatch.setenv('QSTORE_HOME', str(tmp_path / 'home'))
    with Database.open(url) as db:
        assert type(db.vectors).__name__ == 'PgVectorStore' and db.root == tmp_path / 'home'
        assert repr(db).startswith("Database('postgresql://127.0.0.1:")
        db.vectors.upsert(['a', 'b'], [[1.0, 0.0], [0.0, 1.0]])
        db.datasets.put_dataset('d', np.ones((4, 2)), [0, 1, 0, 1])
        db.models.register('m', {'factory': 'json:loads'})
        run = db.metrics.start_run('r', {'lr': 0.1})
        db.metrics.log(run, step=0, loss=0.5)
        db.metrics.end_run(run)
    with Database.open(url) as db:
        assert db.vectors.query([0.9, 0.1], top_k=1)[0].id == 'a'
        assert db.datasets.get_dataset('d').y.tolist() == [0, 1, 0, 1]
        assert db.models.get('m').version == 1
        assert db.metrics.get_run('r').status == 'finished' and db.metrics.history('r')['loss'].tolist() == [0.5]
        with db.sql.transaction() as c:  # the rows are in PostgreSQL: no SQLite file was made
            assert c.execute('SELECT COUNT(*) FROM metrics').fetchone()[0] == 1
    assert not (tmp_path / 'home' / 'qstore.db').exists()


WRITER = textwrap.dedent('''
    import sys, time
    from qstore.storage.db import Database
    url, worker, n, start = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    with Database.open(url) as db:
        db.metrics.flush_every = 1  # every log is its own write transaction
        run = db.metrics.start_run(f'run-{worker}')
        while time.time() < start: time.sleep(0.001)
        for i in range(n):
            db.metrics.log(run, step=i, loss=i / n)
            db.models.register('shared', {'factory': 'json:loads', 'worker': worker, 'i': i})
        db.metrics.end_run(run)
''')


def test_two_writer_processes_lose_nothing(tmp_path):
    url, n = fresh_schema_url(), 40
    env = {**os.environ, 'QSTORE_HOME': str(tmp_path)}
    from qstore.storage.db import Database
    Database.open(url).close()  # tables created once, as a running application would have
    start = time.time() + 3
    procs = [subprocess.Popen([PY, '-c', WRITER, url, w, str(n), str(start)], env=env, stderr=subprocess.PIPE,
                              text=True) for w in ('a', 'b')]
    errs = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errs
    with Database.open(url) as db:
        for w in ('a', 'b'):
            assert db.metrics.history(f'run-{w}')['step'].tolist() == list(range(n))
            assert db.metrics.get_run(f'run-{w}').status == 'finished'
        versions = db.models.list('shared')
        assert [v.version for v in versions] == list(range(1, 2 * n + 1))  # no version number taken twice
        for w in ('a', 'b'):  # each writer's registrations are all there, in its order
            assert [v.spec['i'] for v in versions if v.spec['worker'] == w] == list(range(n))


TRAINER = textwrap.dedent('''
    import sys
    import numpy as np
    from qstore.storage.db import Database
    from qstore.ml.encoding import DataEncoder
    from qstore.ml.layers import HardwareEfficientQuantumLayer, QuantumModel
    from qstore.ml.trainer import QuantumTrainer, TrainingConfig

    def train(url, worker):
        "Fit a small classifier; returns the run's logged history."
        rng = np.random.default_rng(worker)
        X = rng.uniform(0, np.pi, (24, 2))
        y = (X[:, 0] > X[:, 1]).astype(int)
        model = QuantumModel(DataEncoder('angle', n_features=2), HardwareEfficientQuantumLayer(2, 1), ['Z0'],
                             head='affine')
        cfg = TrainingConfig(epochs=3, batch_size=4, loss='cross_entropy', progress=False, seed=worker,
                             checkpoint_interval=2, register_model='shared-model')
        with Database.open(url) as db:
            QuantumTrainer(model, cfg, db=db).fit((X, y), run=f'trainer-{worker}')
            return db.metrics.history(f'trainer-{worker}')

    if __name__ == '__main__':
        train(sys.argv[1], int(sys.argv[2]))
''')


def test_two_trainer_processes_share_one_postgres_database(tmp_path, monkeypatch):
    from qstore.storage.db import Database
    url = fresh_schema_url()
    Database.open(url).close()
    env = {**os.environ, 'QSTORE_HOME': str(tmp_path / 'shared')}
    procs = [subprocess.Popen([PY, '-c', TRAINER, url, str(w)], env=env, stderr=subprocess.PIPE, text=True)
             for w in (1, 2)]
    errs = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errs
    script = {}
    exec(TRAINER, script)  # the same training alone, in memory: what each process must have logged
    monkeypatch.setenv('QSTORE_HOME', str(tmp_path / 'alone'))
    alone = {w: script['train']('sqlite://', w) for w in (1, 2)}
    with Database.open(url) as db:
        for w in (1, 2):
            run = db.metrics.get_run(f'trainer-{w}')
            assert run.status == 'finished' and run.n_records == len(alone[w]['time']) > 18
            got = db.metrics.history(run.run)
            assert set(got) == set(alone[w])
            for col in (c for c in got if c != 'time' and not c.endswith('_s')):  # wall-clock timings differ
                np.testing.assert_array_equal(got[col], alone[w][col], err_msg=col)
        assert sorted(v.version for v in db.models.list('shared-model')) == [1, 2]


def test_euclidean_scores_exact_far_from_the_origin(pg_store):
    "The hardening cases of SQLiteVectorStore: scores are float64 from the stored float32 values, order exact."
    store = pg_store(metric='euclidean')
    pts = np.c_[10_000 + np.arange(10.0), np.full(10, 10_000.0)]
    q = np.array([10_003.25, 10_000.0])
    store.upsert([f"p{i}" for i in range(10)], pts, namespace='line')
    res = store.query(q, top_k=10, namespace='line')
    brute = ((pts - q) ** 2).sum(1)
    assert [m.id for m in res] == [f"p{i}" for i in np.argsort(brute, kind='stable')]
    assert [m.score for m in res] == sorted(brute.tolist()) and res[0].score == 0.0625
    rng = np.random.default_rng(7)
    X = (rng.normal(size=(1000, 64)) + 3_000).astype(np.float32)
    Q = (rng.normal(size=(100, 64)) + 3_000).astype(np.float32)
    brute = ((Q[:, None].astype(np.float64) - X[None].astype(np.float64)) ** 2).sum(-1)
    store.upsert([str(i) for i in range(len(X))], X, [{'even': i % 2 == 0} for i in range(len(X))], namespace='far')
    top = store.query(Q, top_k=3, namespace='far')
    even = store.query(Q, top_k=1, filter={'even': True}, namespace='far')
    assert [int(r[0].id) for r in top] == brute.argmin(1).tolist()
    np.testing.assert_array_equal([[m.score for m in r] for r in top], np.sort(brute, 1)[:, :3])
    assert [int(r[0].id) for r in even] == (2 * brute[:, ::2].argmin(1)).tolist()


def test_bench_stores_pgvector_small():
    "bench/stores_pgvector.py on a small size: every configuration answers, the exact scan has recall 1."
    pg_url()
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / 'bench'))
    try:
        import stores_pgvector
    finally:
        sys.path.pop(0)
    rows = stores_pgvector.run(n=2000, d=8, queries=20, ef_searches=(40,), probes=(10,))
    assert [(r['index'], r['setting']) for r in rows] == [('exact', 'seq scan'), ('hnsw', 'm=16 efc=64 ef_search=40'),
                                                          ('ivfflat', 'probes=10')]
    assert rows[0]['recall_at_10'] == 1.0 and rows[0]['filtered_recall_at_10'] == 1.0
    assert all(r['filtered_min_k'] == 10 and r['load_s'] > 0 and r['p50_ms'] > 0 for r in rows)


KILLED_RUN = textwrap.dedent('''
    import os, signal, sys
    from qstore.storage.db import Database
    db = Database.open(sys.argv[1])
    db.metrics.start_run('killed', {'lr': 0.1})
    db.metrics.log('killed', step=0, loss=1.0)
    db.metrics.flush()
    os.kill(os.getpid(), signal.SIGKILL)
''')


def test_a_sigkilled_run_is_marked_interrupted_on_postgres(tmp_path):
    "As on SQLite (test_storage_hardening): a killed trainer's run is closed as interrupted when the store reopens."
    from qstore.storage.db import Database
    url = fresh_schema_url()
    env = {**os.environ, 'QSTORE_HOME': str(tmp_path)}
    r = subprocess.run([PY, '-c', KILLED_RUN, url], capture_output=True, text=True, env=env)
    assert r.returncode == -9, r.stderr
    with Database.open(url) as db:
        run = db.metrics.get_run('killed')
    assert run.status == 'interrupted' and run.n_records == 1
    assert 'ended without closing the run (killed or crashed)' in run.reason
