"Issue 11, core and gradients: empty batches give empty results, and malformed inputs one clear error."
import re

import numpy as np
import pytest

from qstore.backends.base import get_backend
from qstore.circuits import Circuit, Param, validate_values
from qstore.gradients.adjoint import adjoint
from qstore.gradients.finite_diff import finite_diff
from qstore.gradients.shift import parameter_shift
from qstore.ionq.serialize import to_ionq_json
from qstore.ml.encoding import DataEncoder
from qstore.ml.layers import HardwareEfficientQuantumLayer, QuantumModel
from qstore.observables import Observable, PauliTerm, Z
from qstore.pipeline.batch import CircuitBatchManager
from qstore.simulator import DensityMatrixSimulator, StatevectorSimulator

OBS = ['Z0', 'X1 Z2']


@pytest.fixture(scope='module')
def circ():
    c = Circuit(3)
    a, b = Param('a'), Param('b')
    return c.ry(0, a).rx(1, b).cnot(0, 1).crx(1, 2, a * 0.5).cnot(2, 0)


@pytest.fixture(scope='module')
def empty():
    return np.zeros((0, 2))


def test_statevector_simulator_empty_batch(circ, empty):
    sim = StatevectorSimulator()
    assert sim.statevector(circ, empty).shape == (0, 8)
    assert sim.probabilities(circ, empty).shape == (0, 8)
    assert sim.expectation(circ, empty, OBS).shape == (0, 2)
    assert sim.sample(circ, empty, 100, seed=0).shape == (0, 8)
    assert sim.expectation_shared_prefix(circ, empty, OBS, 0, []).shape == (0, 2)


def test_density_matrix_simulator_empty_batch(circ, empty):
    dm = DensityMatrixSimulator('aria-1')
    assert dm.density_matrix(circ, empty).shape == (0, 8, 8)
    assert dm.probabilities(circ, empty).shape == (0, 8)
    assert dm.expectation(circ, empty, OBS).shape == (0, 2)
    assert dm.sample(circ, empty, 100, seed=0).shape == (0, 8)


@pytest.mark.parametrize('noise', [None, 'aria-1'])
@pytest.mark.parametrize('shots', [None, 100])
def test_gradients_empty_batch(circ, empty, noise, shots):
    be = get_backend('local', noise=noise)
    for r in (parameter_shift(circ, empty, OBS, be, wrt=None, shots=shots, seed=1),
              finite_diff(circ, empty, OBS, be, wrt=None, shots=shots, seed=1)):
        assert r.jacobian.shape == (0, 2, 2)
        assert r.value.shape == (0, 2)


def test_adjoint_empty_batch(circ, empty):
    r = adjoint(circ, empty, OBS, wrt=None)
    assert (r.jacobian.shape, r.value.shape, r.circuits) == ((0, 2, 2), (0, 2), 0)
    assert adjoint(circ, empty, OBS, wrt=None, cotangent=np.zeros((0, 2))).jacobian.shape == (0, 1, 2)


@pytest.mark.parametrize('target', ['local', 'ionq.simulator'])
def test_batch_manager_empty_batch(circ, empty, target):
    with CircuitBatchManager(target) as m:
        assert m.run(circ, empty, OBS, shots=100, seed=0).expectations.shape == (0, 2)
        if target == 'local':
            assert m.run(circ, empty, OBS).expectations.shape == (0, 2)
            assert m.statevector(circ, empty).shape == (0, 8)


def test_ionq_backend_empty_batch_sends_no_job(circ, empty):
    "Called directly (not through the batch manager), an IonQ backend answers 0 rows without a request."
    be = get_backend('ionq.simulator', api_key='k', base_url='http://127.0.0.1:9/v0.4')  # nothing listens there
    assert be.run(circ, empty, OBS, shots=100, seed=0).expectations.shape == (0, 2)
    assert be.run(circ, empty, shots=100, seed=0).counts.shape == (0, 8)
    assert be.client.requests == 0
    be.close()


@pytest.mark.parametrize('encoding', ['angle', 'amplitude', 'iqp'])
@pytest.mark.parametrize('gradient', ['adjoint', 'parameter_shift'])
def test_model_empty_batch(encoding, gradient):
    enc = DataEncoder(encoding, n_features=4)
    model = QuantumModel(enc, HardwareEfficientQuantumLayer(enc.n_qubits), head='affine', n_outputs=2)
    w = np.random.default_rng(0).normal(size=model.n_weights)
    X = np.zeros((0, 4))
    assert model(X, w).shape == (0, 2)
    loss, grad, _ = model.loss_and_grad(X, w, lambda y: (0.0, np.zeros_like(y)), gradient=gradient)
    assert loss == 0.0
    np.testing.assert_array_equal(grad, np.zeros(model.n_weights))


def test_complex_values_are_refused(circ):
    with pytest.raises(TypeError, match='must be real numbers, got complex'):
        validate_values(circ, [[0.1, 0.2 + 1e-3j]])
    with pytest.raises(TypeError, match='must be real numbers, got complex'):
        StatevectorSimulator().expectation(circ, np.array([[1 + 1j, 0]]), 'Z0')
    with pytest.raises(TypeError, match="parameter 'a' must be real"):
        circ.bind({'a': 1j, 'b': 0.0})
    with pytest.raises(TypeError, match='must be real'):
        PauliTerm(((0, 'Z'),), 0.5j)


def test_bool_is_not_a_qubit_count_or_shots(circ):
    with pytest.raises(ValueError, match='is a bool'):
        Circuit(2).h(True)
    with pytest.raises(ValueError, match='is a bool'):
        Circuit(2).append('cnot', [0, True])
    with pytest.raises(ValueError, match='n_qubits must be a positive integer, got True'):
        Circuit(True)
    with pytest.raises(ValueError, match='shots must be a positive integer, got True'):
        StatevectorSimulator().sample(circ, [[0.1, 0.2]], True)
    with pytest.raises(ValueError, match='non-negative integer, got True'):
        Z(True)


@pytest.mark.parametrize('text, message', [
    ('Z0 + ', "a '+' or '-' with no term"),
    ('Z0 +', "a '+' or '-' with no term"),
    ('Z0 + + Z1', "a '+' or '-' with no term"),
    ('Z0 - ', 'a sign with no term'),
    ('1e400*Z0', "coefficient '1e400' in Pauli string '1e400*Z0' is not finite"),
    ('Z0 + -1e999*X1', 'is not finite'),
])
def test_malformed_observables_are_refused(text, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        Observable(text)


def test_observable_arithmetic_cannot_overflow():
    with pytest.raises(ValueError, match='must be finite'):
        Observable('1e300*Z0') * 1e300
    with pytest.raises(ValueError, match='must be finite'):
        Observable('1e308*Z0') + Observable('1e308*Z0')
    assert Observable('+ Z0 - X1').terms == Observable('Z0 - X1').terms  # a leading sign stays valid


def test_statevector_simulator_refuses_too_many_qubits_with_bytes():
    with pytest.raises(ValueError, match=r'30 qubits needs 17,179,869,184 bytes per row.*max_qubits=24'):
        StatevectorSimulator().statevector(Circuit(30).h(0))
    with pytest.raises(ValueError, match=r'30 qubits needs 8,589,934,592 bytes per row'):
        StatevectorSimulator(np.complex64).expectation(Circuit(30).h(0), None, 'Z0')
    with pytest.raises(ValueError, match='max_qubits=2'):
        StatevectorSimulator(max_qubits=2).statevector(Circuit(3).h(0))
    assert StatevectorSimulator(max_qubits=3).statevector(Circuit(3).h(0)).shape == (1, 8)


def test_density_matrix_chunked_equals_unchunked():
    rng = np.random.default_rng(5)
    c = Circuit(4)
    ps = c.parameters_vector('p', 4)
    for q in range(4): c.ry(q, ps[q])
    c.cnot(0, 1).ms(2, 3, 0.1, 0.3, 0.2).crx(1, 2, ps[0] * 0.7).rz(3, ps[2])
    vals = rng.uniform(-3, 3, (37, 4))
    whole, chunked = DensityMatrixSimulator('forte-1'), DensityMatrixSimulator('forte-1', chunk_entries=3 * 256)
    assert len(chunked._chunks(c, vals)) == 13  # 3 rows of 16x16 per chunk
    obs = ['Z0', 'X1 Y2', '0.5*Z0 Z3 + X2']
    np.testing.assert_array_equal(chunked.expectation(c, vals, obs), whole.expectation(c, vals, obs))
    np.testing.assert_array_equal(chunked.probabilities(c, vals), whole.probabilities(c, vals))
    np.testing.assert_array_equal(chunked.density_matrix(c, vals), whole.density_matrix(c, vals))
    np.testing.assert_array_equal(chunked.sample(c, vals, 50, seed=2), whole.sample(c, vals, 50, seed=2))


@pytest.mark.parametrize('family', ['aria', 'forte'])
def test_one_gate_count_for_billing_compiler_and_cache(family):
    from qstore.ionq.serialize import ionq_gate_counts
    from qstore.ionq.compiler import IonQNativeGateCompiler
    from qstore.pipeline.cache import compile_template
    from qstore.testing import reference_circuit, reference_values
    c = reference_circuit(4, 2).i(3)
    native = IonQNativeGateCompiler(family).compile(c)
    entry = compile_template(c, 'ionq.simulator', family)
    billed = ionq_gate_counts(entry.to_ionq_json(reference_values(c, 1))[0])
    assert entry.gate_counts == billed == (native.stats.after_1q, native.stats.after_2q)
    assert (native.stats.before_1q, native.stats.before_2q) == ionq_gate_counts(to_ionq_json(c, reference_values(c, 1)))


def test_density_matrix_memory_does_not_grow_with_the_batch():
    import tracemalloc
    c = Circuit(4)
    ps = c.parameters_vector('p', 4)
    for q in range(4): c.ry(q, ps[q])
    c.cnot(0, 1).cnot(2, 3).ms(1, 2, 0.1, 0.3, 0.2)
    dm = DensityMatrixSimulator('aria-1', chunk_entries=16 * 256)  # 16 rows of 16x16 per chunk

    def peak(rows):
        vals = np.random.default_rng(rows).uniform(-3, 3, (rows, 4))
        tracemalloc.start()
        dm.expectation(c, vals, ['Z0', 'X1 X2'])
        size = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return size

    small, large = peak(64), peak(1024)  # 16 x the rows: one chunk's matrices (64 KiB) still bound the peak
    assert large < small + 1024 * 64 * 8, (small, large)  # plus the (B, 16) probabilities of each basis
