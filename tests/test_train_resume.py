"Resume hardening (issue 11): metrics after SIGKILLs, demo resume, one resume definition, no stray files without a db."
import signal, subprocess, sys, textwrap
from pathlib import Path

import numpy as np
import pytest

from qstore.ml.checkpoint import CheckpointManager
from qstore.storage.db import Database
from qstore.ml.encoding import DataEncoder
from qstore.ml.layers import HardwareEfficientQuantumLayer, QuantumModel
from qstore.ml.trainer import QuantumTrainer, TrainingConfig

SCRIPT = textwrap.dedent('''
    import os, signal, sys
    import numpy as np
    from qstore.storage.db import Database
    from qstore.ml.encoding import DataEncoder
    from qstore.ml.layers import HardwareEfficientQuantumLayer, QuantumModel
    from qstore.ml.trainer import QuantumTrainer, TrainingConfig
    home, kill_at, flush, resume = sys.argv[1], int(sys.argv[2]), sys.argv[3] == '1', sys.argv[4] == '1'
    rng = np.random.default_rng(7)
    X = rng.uniform(0, np.pi, (30, 3))
    y = (X.sum(1) > 1.5 * np.pi).astype(int)
    model = QuantumModel(DataEncoder('angle', n_features=3), HardwareEfficientQuantumLayer(3, 2), ['Z0'], head='affine')
    cfg = TrainingConfig(epochs=3, batch_size=8, loss='cross_entropy', optimizer='adam', learning_rate=0.1,
                         checkpoint_interval=2, checkpoint_dir=home + '/ck', progress=False,
                         seed=3)
    db = Database.open(home)

    def kill(tr, event, logs):
        if event == 'step' and logs['step'] == kill_at:
            if flush: db.metrics.flush()  # rows past the last checkpoint reach the disk before the kill
            os.kill(os.getpid(), signal.SIGKILL)

    tr = QuantumTrainer(model, cfg, db=db, callbacks=[kill])
    tr.fit((X, y), resume=resume, run='run-1')
    np.save(home + '/final.npy', tr.weights)
''')



def comparable(rows):
    "Logged rows without their wall-clock time and the per-process pipeline counters."
    return [{k: v for k, v in r.items() if k != 'time' and not k.startswith('pipeline_')} for r in rows]


def test_metrics_equal_an_uninterrupted_run_after_sigkills(tmp_path, run_python):
    full, crashed = tmp_path / 'full', tmp_path / 'crashed'
    assert run_python(SCRIPT, full, -1, 0, 0).returncode == 0
    # 4 steps per epoch, checkpoints every 2 steps; each kill lands one step after a checkpoint. Step 3: rows 1-3 on
    # disk (step 3 would be logged twice); step 7: rows 5-7 buffered (lost); step 9: just after an epoch's end.
    for i, (kill_at, flush) in enumerate([(3, 1), (7, 0), (9, 1)]):
        r = run_python(SCRIPT, crashed, kill_at, flush, int(i > 0))
        assert r.returncode == -signal.SIGKILL, r.stderr
    r = run_python(SCRIPT, crashed, -1, 0, 1)
    assert r.returncode == 0, r.stderr
    want, got = Database.open(full).metrics, Database.open(crashed).metrics
    steps = got.records('run-1', 'step')
    assert [s['step'] for s in steps] == list(range(1, 13))
    assert comparable(steps) == comparable(want.records('run-1', 'step'))
    assert comparable(got.records('run-1', 'epoch')) == comparable(want.records('run-1', 'epoch'))
    assert comparable(got.records('run-1')) == comparable(want.records('run-1'))  # same order, row for row
    assert np.load(full / 'final.npy').tobytes() == np.load(crashed / 'final.npy').tobytes()


DEMO_KILL = textwrap.dedent('''
    import os, signal, sys
    from qstore.ml import checkpoint
    save = checkpoint.CheckpointManager.save

    def save_then_die(self, step, state):  # SIGKILL right after the second checkpoint is on disk
        path = save(self, step, state)
        if step >= 10: os.kill(os.getpid(), signal.SIGKILL)
        return path

    checkpoint.CheckpointManager.save = save_then_die
    from qstore.jobs import demo
    demo(sys.argv[1], progress=False)
''')


def test_qstore_demo_resumes_an_interrupted_run(tmp_path):
    script, home = tmp_path / 'demo_kill.py', tmp_path / 'home'
    script.write_text(DEMO_KILL)
    r = subprocess.run([sys.executable, str(script), str(home)], capture_output=True, text=True, timeout=300)
    assert r.returncode == -signal.SIGKILL, r.stderr
    killed_run = CheckpointManager(home / 'checkpoints' / 'iris-demo').latest()[1]['run']
    qstore = 'import sys; from qstore.cli import main; sys.exit(main())'  # the `qstore` console script
    r = subprocess.run([sys.executable, '-c', qstore, 'demo', '--home', str(home), '--no-progress'],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert f'(resuming run {killed_run})' in r.stdout
    steps = Database.open(home).metrics.records(killed_run, 'step')
    assert [s['step'] for s in steps] == list(range(1, 85))  # 12 epochs x 7 batches, each step once


def small(tmp_path, **kw):
    rng = np.random.default_rng(0)
    X = rng.uniform(0, np.pi, (16, 2))
    y = (X[:, 0] > X[:, 1]).astype(int)
    model = QuantumModel(DataEncoder('angle', n_features=2), HardwareEfficientQuantumLayer(2, 1), ['Z0'], head='affine')
    return model, dict(epochs=2, batch_size=8, loss='cross_entropy', progress=False, **kw), X, y


def test_resume_ignores_cosmetic_fields_but_not_result_settings(tmp_path):
    model, base, X, y = small(tmp_path, checkpoint_interval=1, checkpoint_dir=str(tmp_path / 'ck'))
    db = Database.open(tmp_path)
    stop = lambda tr, event, logs: event == 'step' and logs['step'] == 2  # noqa: E731
    QuantumTrainer(model, TrainingConfig(**base), db=db, callbacks=[stop]).fit((X, y), run='r')
    tr = QuantumTrainer(model, TrainingConfig(**{**base, 'progress': True, 'keep_checkpoints': 5}), db=db)
    tr.fit((X, y), resume=True, run='r')  # a progress bar and a longer keep-last do not change the run
    assert tr.step_count == 4 and [s['step'] for s in db.metrics.records('r', 'step')] == [1, 2, 3, 4]
    with pytest.raises(ValueError, match='different config'):
        QuantumTrainer(model, TrainingConfig(**{**base, 'learning_rate': 0.2}), db=db).fit((X, y), resume=True, run='r')


def test_fit_without_a_database_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv('QSTORE_HOME', raising=False)
    model, base, X, y = small(tmp_path)
    tr = QuantumTrainer(model, TrainingConfig(**base))
    tr.fit((X, y))
    assert tr.step_count == 4 and len(tr.db.metrics.records(tr.run, 'step')) == 4
    assert list(tmp_path.iterdir()) == []
    QuantumTrainer(model, TrainingConfig(**base, checkpoint_dir='ck')).fit((X, y))  # asked for: only that folder
    assert [p.name for p in tmp_path.iterdir()] == ['ck']


def test_configs_with_the_same_stem_keep_their_own_checkpoints(tmp_path):
    from qstore.jobs import train_from_config
    text = ("training: {epochs: 1, batch_size: 10, loss: cross_entropy, keep_checkpoints: 1, progress: false, "
            "checkpoint_interval: 1, seed: %d}\nmodel: {n_outputs: 1, head: affine, observables: [Z0]}\n")
    paths = []
    for i, sub in enumerate(('a', 'b')):
        (tmp_path / sub).mkdir()
        paths.append(tmp_path / sub / 'train.yaml')
        paths[-1].write_text(text % i)
    first = train_from_config(paths[0], home=tmp_path / 'home', log=lambda *a: None)
    second = train_from_config(paths[1], home=tmp_path / 'home', log=lambda *a: None)
    assert Path(first['checkpoint']).parent != Path(second['checkpoint']).parent
    assert Path(first['checkpoint']).exists() and Path(second['checkpoint']).exists()
    again = train_from_config(paths[0], resume=True, home=tmp_path / 'home', log=lambda *a: None)
    assert again['run'] == first['run']  # --resume finds the same file's folder
