"""Issue 11, storage: registry rows cannot choose the code that runs, exact Euclidean search far from the origin,
runs that crash or are killed are closed, deep filters, database URLs, missing namespaces, a database deleted
mid-run."""
import json
import sqlite3
import subprocess
import sys

import numpy as np
import pytest

from qstore.storage.db import QSTORE_FACTORIES, ModelRegistry, UntrustedCallableError
from qstore.storage.files import CorruptStoreError
from qstore.storage.vectors import SQLiteVectorStore


# --- defect 2: loading a registered model runs only trusted factories -------------------------------

class Tiny:
    def __init__(self, n): self.weights = np.zeros(n)

    @classmethod
    def from_spec(cls, spec): return cls(spec['n'])


TINY = {'factory': f'{__name__}:Tiny.from_spec', 'n': 2}


def _rewrite_spec(home, name, spec):
    "What an attacker with write access to the registry file does: change the stored spec."
    con = sqlite3.connect(home / 'qstore.db')
    con.execute('UPDATE models SET spec=? WHERE name=?', (json.dumps(spec), name))
    con.commit()
    con.close()


@pytest.mark.parametrize('path', ['subprocess:Popen', 'os:system', 'builtins:exec'])
def test_registry_row_naming_any_callable_is_refused_and_nothing_runs(tmp_path, monkeypatch, path):
    calls = []
    module, attr = path.split(':')
    monkeypatch.setattr(sys.modules[module] if module != 'os' else __import__('os'), attr,
                        lambda *a, **k: calls.append(a))
    reg = ModelRegistry(tmp_path / 'home')
    reg.register('m', TINY)
    _rewrite_spec(reg.root, 'm', {'factory': path, 'n': ['echo', 'pwned']})
    with pytest.raises(UntrustedCallableError, match=f"factory '{path}', which is not one of qstore's"):
        reg.load('m')
    with pytest.raises(UntrustedCallableError, match='refusing to import it'):
        reg.load('m', factories={TINY['factory']: Tiny.from_spec})  # an allow-list for other paths does not help
    assert calls == []
    reg.close()


def test_registry_never_imports_a_module_named_on_disk(tmp_path, monkeypatch):
    (tmp_path / 'planted_module.py').write_text(f"open({str(tmp_path / 'ran')!r}, 'w').write('x')\n"
                                                "def build(spec): return spec\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    reg = ModelRegistry(tmp_path / 'home')
    reg.register('m', TINY)
    _rewrite_spec(reg.root, 'm', {'factory': 'planted_module:build'})
    with pytest.raises(UntrustedCallableError):
        reg.load('m')
    assert not (tmp_path / 'ran').exists() and 'planted_module' not in sys.modules
    assert reg.load('m', factories={'planted_module:build': dict})['factory'] == 'planted_module:build'
    reg.close()


def test_registry_loader_path_is_checked_too(tmp_path):
    reg = ModelRegistry(tmp_path / 'home')
    np.save(tmp_path / 'w.npy', np.ones(2))
    reg.register('m', {**TINY, 'loader': 'numpy:load'}, tmp_path / 'w.npy')
    with pytest.raises(UntrustedCallableError, match="loader 'numpy:load'"):
        reg.load('m', factories={TINY['factory']: Tiny.from_spec})
    got = reg.load('m', factories={TINY['factory']: Tiny.from_spec, 'numpy:load': lambda m, p: np.load(p)})
    np.testing.assert_array_equal(got, [1, 1])
    reg.close()


def test_qstore_models_load_without_an_allow_list(tmp_path):
    code = ("import sys\nfrom qstore.jobs import DEMO_MODEL\nfrom qstore.ml.datasets import build_model\n"
            "from qstore.storage.db import Database\nm = build_model(DEMO_MODEL, 4)\n"
            "with Database.open(sys.argv[1]) as db:\n"
            "    db.models.register('q', m.spec())\n"
            "    print(type(db.models.load('q')).__name__)\n")
    out = subprocess.run([sys.executable, '-c', code, str(tmp_path / 'home')], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == 'QuantumModel'
    assert QSTORE_FACTORIES[0] == 'qstore.ml.layers:QuantumModel.from_spec'


# --- defect 3: Euclidean search is exact far from the origin -----------------------------------------

def test_euclidean_points_one_apart_at_ten_thousand():
    pts = np.c_[10_000 + np.arange(10.0), np.full(10, 10_000.0)]
    q = np.array([10_003.25, 10_000.0])
    with SQLiteVectorStore(metric='euclidean') as vs:
        vs.upsert([f"p{i}" for i in range(10)], pts)
        res = vs.query(q, top_k=10)
    brute = ((pts - q) ** 2).sum(1)
    assert [m.id for m in res] == [f"p{i}" for i in np.argsort(brute, kind='stable')]
    assert [m.score for m in res] == sorted(brute.tolist())
    assert res[0].score == 0.0625


def test_euclidean_64d_shifted_by_3000_top1_equals_brute_force():
    rng = np.random.default_rng(7)
    X = (rng.normal(size=(1000, 64)) + 3_000).astype(np.float32)
    Q = (rng.normal(size=(100, 64)) + 3_000).astype(np.float32)
    brute = ((Q[:, None].astype(np.float64) - X[None].astype(np.float64)) ** 2).sum(-1)
    with SQLiteVectorStore(metric='euclidean') as vs:
        vs.upsert([str(i) for i in range(len(X))], X, [{'even': i % 2 == 0} for i in range(len(X))])
        top = vs.query(Q, top_k=3)
        even = vs.query(Q, top_k=1, filter={'even': True})
    assert sum(int(r[0].id) == b for r, b in zip(top, brute.argmin(1))) == 100
    np.testing.assert_array_equal([[m.score for m in r] for r in top], np.sort(brute, 1)[:, :3])
    assert [int(r[0].id) for r in even] == (2 * brute[:, ::2].argmin(1)).tolist()


# --- weak points: deep filters, missing namespaces ----------------------------------------------------

def test_5000_deep_and_filter_is_a_clear_error_not_a_recursion_error():
    deep = {'label': 1}
    for _ in range(5_000): deep = {'$and': [deep]}
    with SQLiteVectorStore() as vs:
        vs.upsert(['a'], [[1.0, 0.0]], [{'label': 1}])
        for call in (lambda: vs.query([1, 0], filter=deep), lambda: vs.count(filter=deep),
                     lambda: vs.delete(filter=deep)):
            with pytest.raises(ValueError, match='more than 100 levels deep'):
                call()
        ok = {'label': 1}
        for _ in range(100): ok = {'$and': [ok]}
        assert [m.id for m in vs.query([1, 0], filter=ok)] == ['a']


def test_querying_a_namespace_that_does_not_exist_is_an_error():
    with SQLiteVectorStore() as vs:
        with pytest.raises(KeyError, match="namespace '' does not exist; namespaces: \\[\\]"):
            vs.query([1, 0])
        vs.upsert(['a'], [[1.0, 0.0]], namespace='docs')
        with pytest.raises(KeyError, match="namespace 'doc' does not exist; namespaces: \\['docs'\\]"):
            vs.query([1, 0], namespace='doc')
        assert vs.query([1, 0], namespace='docs')[0].id == 'a'
        assert vs.count(namespace='doc') == 0  # counting stays a plain zero


# --- weak points: database URLs ---------------------------------------------------------------------

def test_memory_path_is_in_memory_and_creates_nothing(tmp_path, monkeypatch):
    from qstore.storage.db import Database
    monkeypatch.chdir(tmp_path)
    with Database.open(':memory:') as db:
        db.vectors.upsert(['a'], [[1.0, 0.0]])
        assert db.sql.in_memory and db.vectors.count() == 1
        home = db.root
    assert list(tmp_path.iterdir()) == [] and not home.exists()


def test_sqlite_url_names_the_database_file(tmp_path, monkeypatch):
    from qstore.storage.db import Database
    monkeypatch.chdir(tmp_path)
    with Database.open('sqlite:///p/x.db') as db:  # relative, as in SQLAlchemy
        db.metrics.start_run('r')
        assert db.root == tmp_path / 'p'
    assert (tmp_path / 'p' / 'x.db').is_file() and not (tmp_path / 'p' / 'x.db' / 'qstore.db').exists()
    with Database.open(f'sqlite:///{tmp_path}/p/x.db') as db:  # absolute: four slashes
        assert [r.run for r in db.metrics.runs()] == ['r']
    with Database.open(f'sqlite:///{tmp_path}/p/qstore.db') as a, Database.open(tmp_path / 'p') as b:
        a.metrics.start_run('same-store')
        assert [r.run for r in b.metrics.runs()] == ['same-store']
    with pytest.raises(IsADirectoryError, match='a sqlite:// URL names the database file'):
        Database.open(f'sqlite:///{tmp_path}/p')


# --- defect 6: crashed or killed runs do not stay 'running' -------------------------------------------

KILLED_RUN = """
import os, signal, sys
from qstore.storage.db import Database
db = Database.open(sys.argv[1])
db.metrics.start_run('killed', {'lr': 0.1})
db.metrics.log('killed', step=0, loss=1.0)
db.metrics.flush()
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_sigkilled_run_is_marked_interrupted_when_the_store_is_next_opened(tmp_path):
    from qstore.storage.db import Database
    r = subprocess.run([sys.executable, '-c', KILLED_RUN, str(tmp_path)], capture_output=True, text=True)
    assert r.returncode == -9, r.stderr
    con = sqlite3.connect(tmp_path / 'qstore.db')
    assert con.execute("SELECT status, ended FROM runs WHERE run='killed'").fetchone() == ('running', None)
    con.close()
    with Database.open(tmp_path) as db:
        run = db.metrics.get_run('killed')
        mine = db.metrics.start_run('mine')
    assert run.status == 'interrupted' and run.ended >= run.started and run.n_records == 1
    assert 'ended without closing the run (killed or crashed)' in run.reason
    with Database.open(tmp_path) as db:  # a run whose process is alive is not touched by another open
        assert db.metrics.get_run(mine).status == 'running'


def _tiny_trainer(tmp_path, callback):
    from qstore.ml.encoding import DataEncoder
    from qstore.ml.layers import HardwareEfficientQuantumLayer, QuantumModel
    from qstore.ml.trainer import QuantumTrainer, TrainingConfig
    from qstore.storage.db import Database
    rng = np.random.default_rng(0)
    X = rng.uniform(0, np.pi, (16, 2))
    y = (X[:, 0] > X[:, 1]).astype(int)
    model = QuantumModel(DataEncoder('angle', n_features=2), HardwareEfficientQuantumLayer(2, 1), ['Z0'], head='affine')
    cfg = TrainingConfig(epochs=2, batch_size=8, loss='cross_entropy', progress=False, checkpoint_interval=1,
                         checkpoint_dir=str(tmp_path / 'ck'), register_model='tiny')
    db = Database.open(tmp_path / 'home')
    return QuantumTrainer(model, cfg, db=db, callbacks=[callback]), db, (X, y)


@pytest.mark.parametrize('exc, status', [(RuntimeError('backend exploded'), 'failed'),
                                         (KeyboardInterrupt(), 'interrupted')])
def test_an_exception_in_fit_closes_the_run_with_its_reason(tmp_path, exc, status):
    def boom(tr, event, logs):
        if event == 'step' and logs['step'] == 1: raise exc
    tr, db, data = _tiny_trainer(tmp_path, boom)
    with pytest.raises(type(exc)):
        tr.fit(data, run='r')
    run = db.metrics.get_run('r')
    assert run.status == status and run.ended is not None
    assert run.reason == f"{type(exc).__name__}: {exc}"
    db.close()


# --- weak point: the database deleted mid-run ---------------------------------------------------------

def test_deleting_the_database_mid_run_is_an_error_not_a_lost_registration(tmp_path):
    def delete_db(tr, event, logs):
        if event == 'epoch': (tmp_path / 'home' / 'qstore.db').unlink(missing_ok=True)
    tr, db, data = _tiny_trainer(tmp_path, delete_db)
    with pytest.raises(Exception, match='the database file was deleted or replaced while open'):
        tr.fit(data, run='r')
    with pytest.raises(CorruptStoreError, match='deleted or replaced'):  # unsaved metric rows are reported too
        db.close()
    with pytest.raises(sqlite3.ProgrammingError, match='closed'):  # the connection was released all the same
        db.sql.conn.execute('SELECT 1')
