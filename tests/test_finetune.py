"Fine-tuning: the bias head, init_from / init_weights, frozen weight groups, parents in the registry, bit-exact resume."
import signal, textwrap

import numpy as np
import pytest

from qstore.ml.checkpoint import CheckpointManager
from qstore.ml.encoding import DataEncoder
from qstore.ml.layers import HardwareEfficientQuantumLayer, QuantumModel
from qstore.ml.trainer import QuantumTrainer, TrainingConfig
from qstore.storage.db import Database


def data(n=24, shift=0.0):
    rng = np.random.default_rng(0)
    X = rng.uniform(0, np.pi, (n, 2))
    return X, np.cos(X[:, 0]) + shift


def model(head=None, depth=1):
    return QuantumModel(DataEncoder('angle', n_features=2), HardwareEfficientQuantumLayer(2, depth), ['Z0'], head=head)


def test_bias_head_changes_what_the_trainer_learns():
    X, y = data(shift=0.6)  # <Z0> = cos(x0) at zero weights, and it lies in [-1, 1]: the offset needs the bias
    cfg = TrainingConfig(epochs=8, batch_size=8, learning_rate=0.1, progress=False, gradient_method='adjoint')
    plain, biased = QuantumTrainer(model(), cfg), QuantumTrainer(model('bias'), cfg)
    lp, lb = plain.fit((X, y))[-1]['train_loss'], biased.fit((X, y))[-1]['train_loss']
    assert biased.weights.shape == (plain.weights.shape[0] + 1,)
    assert lb < 0.2 * lp, (lb, lp)
    assert abs(biased.weights[-1] - 0.6) < 0.15  # the learned bias carries the offset
    out = biased.predict(X)
    np.testing.assert_allclose(out, model('bias').expectations(X, biased.weights) + biased.weights[-1])


def test_bias_head_round_trips_through_the_registry(tmp_path):
    X, y = data(shift=0.5)
    cfg = TrainingConfig(epochs=1, batch_size=8, progress=False, register_model='b')
    tr = QuantumTrainer(model('bias'), cfg, db=Database.open(tmp_path))
    tr.fit((X, y))
    loaded = Database.open(tmp_path).models.load('b')
    assert loaded.head == 'bias' and loaded.weights.tobytes() == tr.weights.tobytes()
    np.testing.assert_array_equal(loaded(X), tr.predict(X))


@pytest.mark.parametrize('opts', [dict(optimizer='adam', gradient_method='parameter_shift'),
                                  dict(optimizer='spsa', gradient_method='spsa', learning_rate=0.3),
                                  dict(optimizer='qng', gradient_method='adjoint')])
def test_frozen_groups_never_change(opts, tmp_path):
    X, y = data()
    m = QuantumModel(DataEncoder('angle', n_features=2),
                     [HardwareEfficientQuantumLayer(2), HardwareEfficientQuantumLayer(2)], ['Z0'], head='bias')
    w0 = m.init_weights(seed=4, strategy='uniform')
    cfg = TrainingConfig(**{'epochs': 2, 'batch_size': 8, 'progress': False, 'freeze': ['layer1', 'head'], **opts})
    tr = QuantumTrainer(m, cfg)
    tr.fit((X, y), init_weights=w0)
    frozen = ~m.trainable_mask(['layer1', 'head'])
    assert tr.weights[frozen].tobytes() == w0[frozen].tobytes()
    assert not np.array_equal(tr.weights[~frozen], w0[~frozen])


def test_frozen_weights_cost_no_gradient_circuits():
    X, y = data(8)
    m = QuantumModel(DataEncoder('angle', n_features=2), [HardwareEfficientQuantumLayer(2)] * 2, ['Z0'])
    runs = {}
    for freeze in (None, ['layer0']):
        cfg = TrainingConfig(epochs=1, batch_size=8, progress=False, gradient_method='parameter_shift', freeze=freeze)
        tr = QuantumTrainer(m, cfg)
        tr.fit((X, y))
        runs[str(freeze)] = tr.db.metrics.history(tr.run)['circuits'][0]
    # parameter shift: 2 shifted circuits per differentiated weight and row, plus the forward pass
    assert runs['None'] == 8 * (1 + 2 * 8) and runs["['layer0']"] == 8 * (1 + 2 * 4)


def test_bad_fine_tuning_input_gets_clear_errors(tmp_path):
    X, y = data()
    tr = QuantumTrainer(model('bias'), TrainingConfig(epochs=1, progress=False), db=Database.open(tmp_path))
    with pytest.raises(ValueError, match='weights contain NaN'):
        tr.fit((X, y), init_weights=np.full(5, np.nan))
    with pytest.raises(ValueError, match='model has 5 weights'):
        tr.fit((X, y), init_weights=np.zeros(3))
    with pytest.raises(ValueError, match="init_from must be 'name' or 'name:version'"):
        tr.fit((X, y), init_from=':3')
    with pytest.raises(Exception, match="no model named 'nope'"):
        tr.fit((X, y), init_from='nope:1')
    with pytest.raises(ValueError, match="unknown weight group 'layer7'"):
        QuantumTrainer(model('bias'), TrainingConfig(freeze=['layer7'], progress=False)).fit((X, y))
    with pytest.raises(ValueError, match='freeze must list weight group names'):
        TrainingConfig(freeze=[0])


def test_init_from_uses_only_trusted_factories(tmp_path):
    db = Database.open(tmp_path)
    spec = {**model().spec(), 'factory': 'os:system'}
    db.models.register('evil', spec)
    tr = QuantumTrainer(model(), TrainingConfig(epochs=1, progress=False), db=db)
    with pytest.raises(ValueError, match="refusing to import it"):
        tr.fit(data(), init_from='evil')


SCRIPT = textwrap.dedent('''
    import os, signal, sys
    import numpy as np
    from qstore.storage.db import Database
    from qstore.ml.encoding import DataEncoder
    from qstore.ml.layers import HardwareEfficientQuantumLayer, QuantumModel
    from qstore.ml.trainer import QuantumTrainer, TrainingConfig
    mode, home, out, kill_at, resume = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5] == '1'
    rng = np.random.default_rng(7)
    X = rng.uniform(0, np.pi, (30, 3))
    y = (X.sum(1) > 1.5 * np.pi).astype(int)
    model = QuantumModel(DataEncoder('angle', n_features=3), [HardwareEfficientQuantumLayer(3, 1)] * 2, ['Z0'],
                         head='bias')
    db = Database.open(home)
    if mode == 'pretrain':
        QuantumTrainer(model, TrainingConfig(epochs=1, batch_size=8, loss='cross_entropy', progress=False,
                                             register_model='base'), db=db).fit((X, y))
        sys.exit(0)
    spsa = dict(optimizer='spsa', gradient_method='spsa', learning_rate=0.3, shots_per_circuit=200)
    opts = dict(optimizer='adam', learning_rate=0.1) if mode == 'adam' else spsa
    cfg = TrainingConfig(epochs=3, batch_size=8, loss='cross_entropy', checkpoint_interval=1,
                         checkpoint_dir=out + '/ck', keep_checkpoints=2, progress=False, seed=3,
                         freeze=['layer0'], register_model='tuned', **opts)
    kill = lambda tr, event, logs: event == 'step' and logs['step'] == kill_at and os.kill(os.getpid(), signal.SIGKILL)
    tr = QuantumTrainer(model, cfg, db=db, callbacks=[kill])
    tr.fit((X[::-1], y[::-1]), resume=resume, run='run-' + os.path.basename(out), init_from='base:1')
    np.save(out + '/final.npy', tr.weights)
''')


@pytest.mark.parametrize('mode', ['adam', 'spsa'])
def test_fine_tuning_resumes_bit_exactly_after_sigkill(tmp_path, mode, run_python):
    home, full, crashed = tmp_path / 'db', tmp_path / 'full', tmp_path / 'crashed'
    full.mkdir()
    crashed.mkdir()
    assert run_python(SCRIPT, 'pretrain', home, full, -1, 0).returncode == 0
    r = run_python(SCRIPT, mode, home, full, -1, 0)
    assert r.returncode == 0, r.stderr
    r = run_python(SCRIPT, mode, home, crashed, 5, 0)  # killed right after step 5's checkpoint
    assert r.returncode == -signal.SIGKILL and not (crashed / 'final.npy').exists()
    assert max(CheckpointManager(crashed / 'ck').list()).name.endswith('00000005.safetensors')
    r = run_python(SCRIPT, mode, home, crashed, -1, 1)
    assert r.returncode == 0, r.stderr
    a, b = np.load(full / 'final.npy'), np.load(crashed / 'final.npy')
    assert a.tobytes() == b.tobytes()
    db = Database.open(home)
    base = db.models.load('base', 1).weights
    assert a[:6].tobytes() == base[:6].tobytes()  # layer0 frozen at the pre-trained weights
    assert [m.spec.get('parent') for m in db.models.list('tuned')] == ['base:1', 'base:1']
