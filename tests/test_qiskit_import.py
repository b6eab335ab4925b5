"""Qiskit library circuits: import without .decompose(), feature maps through a classical parameter map with the chain
rule in every gradient method, agreement with Qiskit ML's EstimatorQNN, and qiskit-ionq's native transpile."""
import textwrap, warnings

import numpy as np
import pytest
from qiskit import QuantumCircuit
from qiskit.circuit.library import (EfficientSU2, PauliFeatureMap, RealAmplitudes, TwoLocal, ZZFeatureMap,
                                    real_amplitudes, zz_feature_map)
from qiskit.quantum_info import SparsePauliOp, Statevector

from qstore.backends.base import get_backend
from qstore.backends.convert import from_qiskit, from_qiskit_mapped
from qstore.gradients.adaptive import AdaptiveGradient
from qstore.gradients.core import mapped_gradient, run_gradient
from qstore.gradients.spsa import SPSAGradientEstimator
from qstore.simulator import StatevectorSimulator

# Qiskit's Pauli strings are big-endian (the last letter is qubit 0); the same observables in qstore's notation
QK_OBS = [SparsePauliOp('ZZI'), SparsePauliOp.from_list([('IIX', 0.5), ('YIZ', -0.3)])]
QS_OBS = ['Z1 Z2', '0.5*X0 - 0.3*Y2 Z0']


def library(cls, *args, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', DeprecationWarning)  # Qiskit 2.1+ deprecates the classes for functions
        return cls(*args, **kw)


def feature_model(blocks: bool):
    "ZZFeatureMap + RealAmplitudes on 3 qubits, as Qiskit's library objects (blocks) or its functions."
    fm = library(ZZFeatureMap, 3) if blocks else zz_feature_map(3)
    ansatz = library(RealAmplitudes, 3, reps=2) if blocks else real_amplitudes(3, reps=2)
    qc = QuantumCircuit(3)
    qc.compose(fm, inplace=True)
    qc.compose(ansatz, inplace=True)
    return qc, fm, ansatz


@pytest.mark.parametrize('make', [lambda: library(RealAmplitudes, 4, reps=2), lambda: library(EfficientSU2, 3, reps=2),
                                  lambda: library(TwoLocal, 3, ['ry', 'rz'], 'cz', 'linear', reps=2)])
def test_library_blocks_import_without_decompose(make):
    qc = make()
    assert [i.operation.name for i in qc.data] == [qc.name]  # one opaque block: nothing was decomposed
    c = from_qiskit(qc)
    vals = np.random.default_rng(0).uniform(-np.pi, np.pi, (3, qc.num_parameters))
    want = [Statevector(qc.assign_parameters(v)).data for v in vals]
    np.testing.assert_allclose(StatevectorSimulator().statevector(c, vals), want, atol=1e-12)


@pytest.mark.parametrize('make', [lambda: library(ZZFeatureMap, 3, reps=2, entanglement='full'),
                                  lambda: library(PauliFeatureMap, 3, reps=2, paulis=['X', 'YY', 'ZXZ'], alpha=0.7),
                                  lambda: zz_feature_map(4, entanglement='circular')])
def test_feature_maps_import_through_a_parameter_map(make):
    fm = make()
    m = from_qiskit_mapped(fm, groups='inputs')
    assert m.derived and set(m.groups) == {'inputs'}
    X = np.random.default_rng(1).uniform(0, np.pi, (4, fm.num_parameters))
    want = [Statevector(fm.assign_parameters(x)).data for x in X]
    np.testing.assert_allclose(StatevectorSimulator().statevector(m.circuit, m.values(X)), want, atol=1e-12)
    # the map's Jacobian against central differences of the map itself
    h, J = 1e-6, m.jacobian(X)
    fd = np.stack([(m.values(X + h * e) - m.values(X - h * e)) / (2 * h) for e in np.eye(X.shape[1])], -1)
    np.testing.assert_allclose(J, fd, atol=1e-6)


@pytest.mark.parametrize('blocks', [False, True])
def test_matches_qiskit_ml_estimator_qnn(blocks):
    qml = pytest.importorskip('qiskit_machine_learning.neural_networks')
    qc, fm, ansatz = feature_model(blocks)
    qnn = qml.EstimatorQNN(circuit=qc, input_params=fm.parameters, weight_params=ansatz.parameters,
                           observables=QK_OBS, input_gradients=True)
    rng = np.random.default_rng(2)
    X, w = rng.uniform(0, np.pi, (6, 3)), rng.uniform(-np.pi, np.pi, ansatz.num_parameters)
    out, (gx, gw) = qnn.forward(X, w), qnn.backward(X, w)
    m = from_qiskit_mapped(qc, groups={p.name: 'inputs' for p in fm.parameters})
    U = m.bind(inputs=X, weights=w)
    E = get_backend('local').run(m.circuit, m.values(U), QS_OBS).expectations
    assert np.abs(E - out).max() < 1e-8
    xi = [m.parameters.index(p.name) for p in fm.parameters]
    wi = [m.parameters.index(p.name) for p in ansatz.parameters]
    for method in ('adjoint', 'parameter_shift'):
        J = mapped_gradient(method, m, U, QS_OBS).jacobian
        assert np.abs(J[:, :, xi] - gx).max() < 1e-8, method
        assert np.abs(J[:, :, wi] - gw).max() < 1e-8, method
        Jx = mapped_gradient(method, m, U, QS_OBS, wrt='inputs')
        assert Jx.params == [p.name for p in fm.parameters] and np.abs(Jx.jacobian - gx).max() < 1e-8


def test_chain_rule_in_every_gradient_method():
    qc, fm, _ = feature_model(False)
    m = from_qiskit_mapped(qc, groups={p.name: 'inputs' for p in fm.parameters})
    rng = np.random.default_rng(3)
    U = m.bind(inputs=rng.uniform(0, np.pi, (3, 3)), weights=rng.uniform(-1, 1, 9))
    be = get_backend('local')
    f = lambda U: be.run(m.circuit, m.values(U), QS_OBS).expectations
    h = 1e-6
    fd = np.stack([(f(U + h * e) - f(U - h * e)) / (2 * h) for e in np.eye(U.shape[1])], -1)
    for method in ('adjoint', 'parameter_shift', 'finite_diff', AdaptiveGradient()):
        J = mapped_gradient(method, m, U, QS_OBS).jacobian
        np.testing.assert_allclose(J, fd, atol=1e-5 if method == 'finite_diff' else 1e-8, err_msg=str(method))
    # a stochastic method: the same SPSA estimate on the circuit, pulled back through the map's Jacobian
    cols = list(range(m.circuit.num_parameters))
    r = run_gradient(SPSAGradientEstimator(seed=5), m.circuit, m.values(U), QS_OBS, be, cols)
    want = np.einsum('bkc,bcs->bks', r.jacobian, m.jacobian(U))
    np.testing.assert_allclose(mapped_gradient(SPSAGradientEstimator(seed=5), m, U, QS_OBS).jacobian, want,
                               atol=1e-12)


def test_mapped_import_errors():
    qc, fm, _ = feature_model(False)
    with pytest.raises(ValueError, match="groups names parameter"):
        from_qiskit_mapped(qc, groups={'nope': 'inputs'})
    m = from_qiskit_mapped(qc)
    with pytest.raises(ValueError, match='NaN or inf'):
        m.values(np.full((1, 12), np.nan))
    with pytest.raises(ValueError, match="unknown source parameter"):
        mapped_gradient('adjoint', m, np.zeros((1, 12)), QS_OBS, wrt=['z'])


PROBE = textwrap.dedent('''
    import os, sys, threading, warnings
    import qiskit, qiskit_ionq
    from qiskit import transpile
    from qiskit.circuit.random import random_circuit
    from qstore.ionq.emulator import EmulatorConfig, EmulatorServer
    warnings.simplefilter('ignore')
    with EmulatorServer(EmulatorConfig(max_phase=None)) as srv:
        os.environ['QISKIT_IONQ_API_URL'] = srv.base_url
        backend = qiskit_ionq.IonQProvider(token='k', url=srv.base_url).get_backend('simulator', gateset='native')
        circuits = [random_circuit(5, 5, max_operands=2, seed=s, measure=True) for s in range(12)]
        out = {}
        worker = threading.Thread(target=lambda: out.update(c=transpile(circuits, backend=backend)), daemon=True)
        worker.start()  # from a worker thread, as the circuit pipeline calls it
        worker.join(120)
        if worker.is_alive(): os._exit(3)
        print(qiskit.__version__, sorted({g for c in out['c'] for g in c.count_ops()}))
''')


def test_qiskit_ionq_native_transpile_does_not_hang(run_python):
    "qiskit >= 2.5 used to deadlock here (the reason for the old qiskit<2.5 pin): transpile must finish."
    r = run_python(PROBE)
    assert r.returncode == 0, (r.returncode, r.stderr[-2000:])
    version, gates = r.stdout.split(' ', 1)
    assert set(eval(gates)) <= {'gpi', 'gpi2', 'ms', 'measure', 'barrier'}, gates


@pytest.mark.parametrize('blocks', [False, True])
def test_qiskit_model_matches_estimator_qnn(blocks):
    qml = pytest.importorskip('qiskit_machine_learning.neural_networks')
    from qstore.ml.qiskit import QiskitModel
    qc, fm, ansatz = feature_model(blocks)
    qnn = qml.EstimatorQNN(circuit=qc, input_params=fm.parameters, weight_params=ansatz.parameters,
                           observables=QK_OBS, input_gradients=True)
    rng = np.random.default_rng(4)
    X, w = rng.uniform(0, np.pi, (5, 3)), rng.uniform(-np.pi, np.pi, ansatz.num_parameters)
    model = QiskitModel(fm, ansatz, QS_OBS)
    assert np.abs(model(X, w) - qnn.forward(X, w)).max() < 1e-8
    gx, gw = qnn.backward(X, w)
    for method in ('adjoint', 'parameter_shift'):
        dx, dw = model.readout_jacobians(X, w, method)
        assert np.abs(dx - gx).max() < 1e-8 and np.abs(dw - gw).max() < 1e-8, method


RESUME = textwrap.dedent('''
    import os, signal, sys
    import numpy as np
    from qiskit.circuit.library import real_amplitudes, zz_feature_map
    from qstore.ml.qiskit import QiskitModel
    from qstore.ml.trainer import QuantumTrainer, TrainingConfig
    from qstore.storage.db import Database
    home, kill_at, resume = sys.argv[1], int(sys.argv[2]), sys.argv[3] == '1'
    rng = np.random.default_rng(0)
    X = rng.uniform(0, np.pi, (16, 2))
    y = (X[:, 0] > X[:, 1]).astype(int)
    model = QiskitModel(zz_feature_map(2), real_amplitudes(2, reps=1), ['Z0 Z1'], head='bias')
    cfg = TrainingConfig(epochs=2, batch_size=4, loss='cross_entropy', checkpoint_interval=1, progress=False,
                         gradient_method='parameter_shift', checkpoint_dir=home + '/ck')
    kill = lambda tr, event, logs: event == 'step' and logs['step'] == kill_at and os.kill(os.getpid(), signal.SIGKILL)
    tr = QuantumTrainer(model, cfg, db=Database.open(home), callbacks=[kill])
    tr.fit((X, y), resume=resume, run='r')
    np.save(home + '/final.npy', tr.weights)
''')


def test_qiskit_model_resumes_bit_exactly_in_a_new_process(tmp_path, run_python):
    full, crashed = tmp_path / 'full', tmp_path / 'crashed'
    assert run_python(RESUME, full, -1, 0).returncode == 0
    assert run_python(RESUME, crashed, 3, 0).returncode == -9
    r = run_python(RESUME, crashed, -1, 1)
    assert r.returncode == 0, r.stderr[-2000:]
    assert np.load(full / 'final.npy').tobytes() == np.load(crashed / 'final.npy').tobytes()
