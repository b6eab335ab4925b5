"Training engine: bit-exact resume after SIGKILL, corrupt checkpoints, config validation, secrets, learning results."
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
    mode, home, kill_at, resume = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == '1'
    rng = np.random.default_rng(7)
    X = rng.uniform(0, np.pi, (30, 3))
    y = (X.sum(1) > 1.5 * np.pi).astype(int)
    model = QuantumModel(DataEncoder('angle', n_features=3), HardwareEfficientQuantumLayer(3, 2), ['Z0'], head='affine')
    spsa = dict(optimizer='spsa', gradient_method='spsa', learning_rate=0.3, shots_per_circuit=200)
    opts = dict(optimizer='adam', learning_rate=0.1) if mode == 'adam' else spsa
    cfg = TrainingConfig(epochs=3, batch_size=8, loss='cross_entropy', checkpoint_interval=1,
                         checkpoint_dir=home + '/ck',
                         keep_checkpoints=2, progress=False, seed=3, **opts)
    kill = lambda tr, event, logs: event == 'step' and logs['step'] == kill_at and os.kill(os.getpid(), signal.SIGKILL)
    tr = QuantumTrainer(model, cfg, db=Database.open(home), callbacks=[kill])
    tr.fit((X, y), resume=resume, run='run-1')
    np.save(home + '/final.npy', tr.weights)
''')



@pytest.mark.parametrize('mode', ['adam', 'spsa'])
def test_resume_after_sigkill_is_bit_exact(tmp_path, mode, run_python):
    full, crashed = tmp_path / 'full', tmp_path / 'crashed'
    r = run_python(SCRIPT, mode, full, -1, 0)
    assert r.returncode == 0, r.stderr
    r = run_python(SCRIPT, mode, crashed, 5, 0)  # killed right after step 5's checkpoint
    assert r.returncode == -signal.SIGKILL and not (crashed / 'final.npy').exists()
    assert max(CheckpointManager(crashed / 'ck').list()).name.endswith('00000005.safetensors')
    r = run_python(SCRIPT, mode, crashed, -1, 1)  # resume and finish: 3 epochs x 4 steps
    assert r.returncode == 0, r.stderr
    a, b = np.load(full / 'final.npy'), np.load(crashed / 'final.npy')
    assert a.tobytes() == b.tobytes()


def small_setup(tmp_path, **cfg):
    rng = np.random.default_rng(0)
    X = rng.uniform(0, np.pi, (16, 2))
    y = (X[:, 0] > X[:, 1]).astype(int)
    model = QuantumModel(DataEncoder('angle', n_features=2), HardwareEfficientQuantumLayer(2, 1), ['Z0'], head='affine')
    config = TrainingConfig(**{'epochs': 2, 'batch_size': 8, 'loss': 'cross_entropy', 'progress': False,
                               'checkpoint_interval': 1, 'checkpoint_dir': str(tmp_path / 'ck'), **cfg})
    return model, config, X, y


def test_corrupt_checkpoint_falls_back_to_previous(tmp_path):
    model, cfg, X, y = small_setup(tmp_path, keep_checkpoints=5)
    QuantumTrainer(model, cfg, db=Database.open(tmp_path)).fit((X, y))
    ck = CheckpointManager(tmp_path / 'ck')
    newest = max(ck.list())
    newest.write_bytes(newest.read_bytes()[: len(newest.read_bytes()) // 2])  # truncate
    with pytest.raises(Exception, match=newest.name):
        ck.load(newest)
    with pytest.warns(UserWarning):
        path, state = ck.latest()
    assert path != newest and state['step'] == 3


def test_config_rejects_unknown_keys_and_contradictions():
    with pytest.raises(ValueError, match="unknown TrainingConfig key"):
        TrainingConfig.from_dict({'learning_rate': 0.1, 'use_quantum_magic': True})
    with pytest.raises(ValueError, match='contradicts'):
        TrainingConfig(optimizer='qnspsa', gradient_method='parameter_shift')
    with pytest.raises(ValueError, match='momentum only applies'):
        TrainingConfig(optimizer='adam', momentum=0.9)


def test_nan_in_data_is_rejected_before_training(tmp_path):
    model, cfg, X, y = small_setup(tmp_path)
    X[5, 1] = np.nan
    db = Database.open(tmp_path)
    with pytest.raises(ValueError, match='NaN or inf'):
        QuantumTrainer(model, cfg, db=db).fit((X, y))
    assert not (tmp_path / 'ck').exists() or not list((tmp_path / 'ck').glob('*.safetensors'))


def test_api_key_never_written(tmp_path, monkeypatch, caplog):
    secret = 'sk-test-DO-NOT-LEAK-9f8e7d'
    monkeypatch.setenv('IONQ_API_KEY', secret)
    model, cfg, X, y = small_setup(tmp_path, register_model='leak-check')
    caplog.set_level('DEBUG')
    tr = QuantumTrainer(model, cfg, db=Database.open(tmp_path))
    tr.fit((X, y))
    assert secret not in repr(cfg) and secret not in caplog.text
    for p in tmp_path.rglob('*'):
        if p.is_file(): assert secret.encode() not in p.read_bytes(), p


def test_every_config_field_changes_behaviour(tmp_path):
    "Each field, changed alone from the defaults, changes the trained weights, the history or the run's artefacts."
    base = dict(epochs=2, batch_size=8, progress=False)
    rng = np.random.default_rng(1)
    X = rng.uniform(0, np.pi, (16, 2))
    y = (X[:, 0] > X[:, 1]).astype(float)
    model = QuantumModel(DataEncoder('angle', n_features=2), HardwareEfficientQuantumLayer(2, 1), ['Z0'], head='affine')

    def outcome(tag, **kw):
        home = tmp_path / tag
        tr = QuantumTrainer(model, TrainingConfig(**{**base, 'checkpoint_dir': str(home / 'ck'), **kw}),
                            db=Database.open(home))
        hist = tr.fit((X, y))
        files = sorted(p.name for p in (home / 'ck').glob('*.safetensors'))
        return tr.weights.tobytes(), len(hist), files, tr.step_count, bool(tr.db.models.names())

    ref = outcome('ref')
    changes = dict(learning_rate=0.2, epochs=3, batch_size=5, optimizer='sgd',
                   loss='hinge', shots_per_circuit=500, noise_model='aria-1', seed=1, init_strategy='uniform',
                   lr_schedule='cosine', validation_split=0.25, checkpoint_interval=1, spsa_c=0.3, spsa_A=1.0,
                   num_directions=3, qng_lambda=0.5, register_model='m', momentum=0.9, keep_checkpoints=1,
                   early_stopping_patience=1, gradient_budget=2)
    needs = {'spsa_c': dict(optimizer='spsa', gradient_method='spsa'),
             'spsa_A': dict(optimizer='spsa', gradient_method='spsa'),
             'num_directions': dict(optimizer='spsa', gradient_method='spsa'), 'qng_lambda': dict(optimizer='qng'),
             'momentum': dict(optimizer='sgd'),
             'keep_checkpoints': dict(checkpoint_interval=1),
             'early_stopping_patience': dict(validation_split=0.25, epochs=6, learning_rate=0.5),
             'gradient_budget': dict(shots_per_circuit=300)}
    for field, value in changes.items():
        ctx = needs.get(field, {})
        base_ctx = outcome(f'{field}-base', **ctx) if ctx else ref
        assert outcome(field, **ctx, **{field: value}) != base_ctx, field
    # gradient_method: exact methods reach the same weights (to round-off) but run different circuits, recorded per step
    home = tmp_path / 'gm'
    tr = QuantumTrainer(model,
                        TrainingConfig(**base, gradient_method='parameter_shift', checkpoint_dir=str(home / 'ck')),
                        db=Database.open(home))
    tr.fit((X, y))
    assert set(tr.db.metrics.history(tr.run, kind='step')['method']) == {'parameter_shift'}
    # same optimisation, another differentiation method
    assert np.allclose(tr.weights, np.frombuffer(ref[0]), atol=1e-6)


def test_demo_reaches_95_percent_and_reuses(tmp_path):
    from qstore.jobs import demo
    logs = []
    first = demo(tmp_path, progress=False, log=logs.append)
    assert first['test_accuracy'] >= 0.95 and first['status'].startswith('trained')
    assert Path(first['plot']).exists() and Path(first['checkpoint']).exists()
    again = demo(tmp_path, progress=False, log=logs.append)  # second run reuses, never crashes on existing state
    assert again['status'].startswith('reused') and again['test_accuracy'] == first['test_accuracy']


def test_parity_reaches_full_training_accuracy(tmp_path):
    from qstore.ml.datasets import load_data
    X, y, _ = load_data('parity')
    model = QuantumModel(DataEncoder('basis', n_features=4), HardwareEfficientQuantumLayer(4, 3),
                         ['Z0', 'Z1', 'Z2', 'Z3'], head='affine')
    cfg = TrainingConfig(epochs=40, batch_size=16, learning_rate=0.1, loss='cross_entropy', init_strategy='uniform',
                         seed=2,
                         progress=False, checkpoint_dir=str(tmp_path / 'ck'))
    tr = QuantumTrainer(model, cfg, db=Database.open(tmp_path))
    tr.fit((X, y))
    assert tr.evaluate(X, y)['accuracy'] == 1.0


def test_pipeline_flags_reach_the_batch_manager(tmp_path, monkeypatch):
    """The TrainingConfig pipeline switches configure the CircuitBatchManager every circuit runs through (their effects:
    tests/test_pipeline.py)."""
    from qstore.ionq.emulator import EmulatorConfig, EmulatorServer
    model, _, X, y = small_setup(tmp_path)
    with EmulatorServer(EmulatorConfig()) as srv:
        monkeypatch.setenv('IONQ_API_URL', srv.base_url)
        monkeypatch.setenv('IONQ_API_KEY', 'test-key-123')
        seen = {}
        for flags in (dict(), dict(use_batch_api=False, use_native_gates=True, enable_smart_caching=False,
                                   adaptive_batch_sizing=False, connection_pool_size=2)):
            cfg = TrainingConfig(epochs=1, batch_size=8, optimizer='spsa', gradient_method='spsa', loss='cross_entropy',
                                 backend='ionq.simulator', shots_per_circuit=100, progress=False,
                                 checkpoint_dir=str(tmp_path / f"ck{len(flags)}"), **flags)
            tr = QuantumTrainer(model, cfg, db=Database.open(tmp_path / f"db{len(flags)}"))
            before = srv.stats()['jobs_created']
            tr.fit((X, y))
            rep = tr.backend.report()
            seen[len(flags)] = (tr.backend.flags, srv.stats()['jobs_created'] - before, rep.template_cache['hits'])
    on, off = seen[0], seen[5]
    assert on[0]['use_batch_api']
    assert not off[0]['use_batch_api']
    assert off[0]['use_native_gates']
    assert off[0]['connection_pool_size'] == 2
    assert off[1] > on[1]  # one job per circuit instead of one per chunk
    assert on[2] > 0 and off[2] == 0  # cache hits only with smart caching


def test_backend_progress_and_key_env_fields(tmp_path, monkeypatch, capsys):
    model, _, X, y = small_setup(tmp_path)
    base = dict(epochs=1, batch_size=8, loss='cross_entropy')
    tr = QuantumTrainer(model,
                        TrainingConfig(**base, backend='cirq', progress=False, checkpoint_dir=str(tmp_path / 'c1')),
                        db=Database.open(tmp_path / 'd1'))
    assert tr.backend.inner.name == 'cirq'
    tr.fit((X, y))
    assert 'epoch 1/1' not in capsys.readouterr().err
    tr = QuantumTrainer(model, TrainingConfig(**base, progress=True, checkpoint_dir=str(tmp_path / 'c2')),
                        db=Database.open(tmp_path / 'd2'))
    assert tr.backend.inner.name == 'local'
    tr.fit((X, y))
    assert 'epoch 1/1' in capsys.readouterr().err
    monkeypatch.setenv('MY_IONQ_KEY', 'sk-abc-12345678')
    cfg = TrainingConfig(**base, api_key_env='MY_IONQ_KEY')
    assert cfg.api_key == 'sk-abc-12345678' and TrainingConfig(**base).api_key != 'sk-abc-12345678'
    assert 'sk-abc-12345678' not in repr(cfg)


def test_api_key_never_leaks_through_an_ionq_backend(tmp_path, monkeypatch, caplog):
    "Train on the IonQ emulator with the key in the environment: no file, log line or repr contains it."
    from qstore.ionq.emulator import EmulatorConfig, EmulatorServer
    secret = 'sk-live-SECRET-77aa88bb99'
    model, _, X, y = small_setup(tmp_path)
    caplog.set_level('DEBUG')
    with EmulatorServer(EmulatorConfig()) as srv:
        monkeypatch.setenv('IONQ_API_URL', srv.base_url)
        monkeypatch.setenv('IONQ_API_KEY', secret)
        cfg = TrainingConfig(epochs=1, batch_size=8, optimizer='spsa', gradient_method='spsa', loss='cross_entropy',
                             backend='ionq.simulator',
                             shots_per_circuit=100, progress=False, checkpoint_interval=1, register_model='ionq-model',
                             checkpoint_dir=str(tmp_path / 'ck'))
        tr = QuantumTrainer(model, cfg, db=Database.open(tmp_path / 'db'))
        tr.fit((X, y))
        shown = repr(cfg) + repr(tr.backend) + repr(tr.backend.inner) + caplog.text
    assert secret not in shown
    for p in tmp_path.rglob('*'):
        if p.is_file(): assert secret.encode() not in p.read_bytes(), p


IONQ_TRAIN_SCRIPT = textwrap.dedent('''
    import os, sys
    import numpy as np
    from qstore.ionq.emulator import EmulatorConfig, EmulatorServer
    from qstore.storage.db import Database
    from qstore.ml.encoding import DataEncoder
    from qstore.ml.layers import HardwareEfficientQuantumLayer, QuantumModel
    from qstore.ml.trainer import QuantumTrainer, TrainingConfig
    home = sys.argv[1]
    rng = np.random.default_rng(7)
    X = rng.uniform(0, np.pi, (16, 2))
    y = (X.sum(1) > np.pi).astype(int)
    with EmulatorServer(EmulatorConfig()) as srv:
        os.environ.update(IONQ_API_URL=srv.base_url, IONQ_API_KEY='test-key-123')
        encoder = DataEncoder('angle', n_features=2)
        model = QuantumModel(encoder, HardwareEfficientQuantumLayer(2, 1), ['Z0'], head='affine')
        cfg = TrainingConfig(epochs=1, batch_size=8, optimizer='spsa', gradient_method='spsa', loss='cross_entropy',
                             backend='ionq.simulator', shots_per_circuit=100, progress=False,
                             checkpoint_dir=home + '/ck')
        QuantumTrainer(model, cfg, db=Database.open(home + '/db')).fit((X, y))
    print('trained')
''')


def test_training_on_ionq_leaves_no_unclosed_transport(tmp_path):
    """The trainer never closes its backend: the client's bridge closes its pooled connections at exit, so no
    ResourceWarning."""
    script = tmp_path / 'train_ionq.py'
    script.write_text(IONQ_TRAIN_SCRIPT)
    r = subprocess.run([sys.executable, '-X', 'dev', '-W', 'default', str(script), str(tmp_path)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.strip() == 'trained', r.stderr
    assert 'ResourceWarning' not in r.stderr and 'unclosed' not in r.stderr, r.stderr
