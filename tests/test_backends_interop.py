"""The 'cirq', 'qiskit', 'cirq-ionq.*' and 'qiskit-ionq.*' backends against the local simulator (and the local IonQ
emulator)."""
import numpy as np
import pytest

from qstore.backends.base import get_backend
from qstore.circuits import Circuit
from qstore.gates import GATES
from qstore.gradients.adjoint import adjoint
from qstore.ionq.emulator import EmulatorConfig, EmulatorServer
import qstore.backends.cirq as bc
import qstore.backends.qiskit as bq

OBS = ['Z0', '0.5*X1 Z2 - Y0', 'Z0 Z1 Z2 + 0.25*X3', 'Y1 Y3']


def random_template(n=4, seed=0):
    "Every gate once on random qubits, half the angles affine in a parameter."
    rng = np.random.default_rng(seed)
    c = Circuit(n, 'interop')
    ps = c.parameters_vector('w', 4) + [c.parameter('x', 'inputs')]
    for g in sorted(GATES):
        gd = GATES[g]
        c.append(g, [int(q) for q in rng.permutation(n)[:gd.num_qubits]],
                 *[ps[rng.integers(len(ps))] * rng.normal() + rng.normal() if rng.random() < 0.5
                    else float(rng.normal())
                   for _ in range(gd.num_angles)])
    for k, p in enumerate(ps): c.ry(k % n, p)  # every parameter used
    return c, rng.uniform(-2, 2, (3, c.num_parameters))


def within(res, exact, k=5):
    return bool(np.all(np.abs(res.expectations - exact) < k * res.stderr + 1e-12))


@pytest.mark.parametrize('name', ['cirq', 'qiskit'])
def test_simulator_backends_match_local(name):
    c, v = random_template()
    local, be = get_backend('local'), get_backend(name, seed=7)
    exact = local.run(c, v, OBS).expectations
    np.testing.assert_allclose(be.run(c, v, OBS).expectations, exact, atol=1e-10)
    np.testing.assert_allclose(be.run(c, v).probabilities, local.run(c, v).probabilities, atol=1e-10)
    np.testing.assert_allclose(be.statevector(c, v), local.statevector(c, v), atol=1e-10)
    res = be.run(c, v, OBS, shots=3000)
    assert res.counts is None and within(res, exact)
    counts = be.run(c, v, shots=500).counts
    assert counts.shape == (3, 16) and (counts.sum(axis=1) == 500).all()
    # reproducible with a seed
    def counts(): return get_backend(name, seed=1).run(c, v, shots=200).counts
    assert (counts() == counts()).all()
    # adjoint differentiation through the backend's statevectors
    np.testing.assert_allclose(adjoint(c, v, OBS, backend=be).jacobian, adjoint(c, v, OBS, backend='local').jacobian,
                               atol=1e-9)


def test_counts_mapping_helpers():
    bits = np.array([[1, 0, 0], [0, 1, 1], [1, 0, 0]])  # columns = LineQubit 0, 1, 2
    np.testing.assert_array_equal(bc.cirq_counts(bits, 3), np.bincount([1, 6, 1], minlength=8))

    class Bits:  # a stand-in for qiskit's BitArray: (B, shots, bytes), big-endian bytes
        array = np.array([[[1, 0], [0, 255]], [[0, 3], [0, 3]]], dtype=np.uint8)
    np.testing.assert_array_equal(bq._bitarray_counts(Bits, 9).nonzero(), ([0, 0, 1], [255, 256, 3]))


@pytest.fixture(scope='module')
def emulator():
    with EmulatorServer(EmulatorConfig(seed=5)) as srv: yield srv


@pytest.mark.parametrize('family', ['cirq-ionq', 'qiskit-ionq'])
def test_ionq_routes_match_local_within_shot_error(emulator, family):
    c, v = random_template()
    be = get_backend(f'{family}.simulator', remote_host=emulator.url, api_key='test-key', seed=11)
    before = emulator.stats()
    res = be.run(c, v, OBS)  # sampling-only: default shots
    after = emulator.stats()
    bases = len(res.metadata['bases'])
    assert res.shots == 1000 and res.n_circuits == 3 * bases
    assert after['jobs_created'] - before['jobs_created'] == 1  # every row and basis in one multi-circuit job
    assert after['circuits_submitted'] - before['circuits_submitted'] == 3 * bases
    assert within(res, get_backend('local').run(c, v, OBS).expectations)
    # endianness through the whole chain: X on qubit 1 of 3 is outcome 2
    assert be.run(Circuit(3).x(1), shots=20).counts[0, 2] == 20


@pytest.mark.parametrize('family', ['cirq-ionq', 'qiskit-ionq'])
def test_ionq_routes_native_and_qpu_targets(emulator, family):
    c = Circuit(2)
    t = c.parameter('t')
    c.gpi2(0, t).ms(0, 1, 0.1, 0.2).gpi(1, 0.5 * t)
    v = [[0.1], [2.7]]  # phases of 2.7 and 1.35 turns are outside IonQ's [-1, 1]: sent as equivalent phases
    exact = get_backend('local').run(c, v, ['Z0 Z1', 'Z1']).expectations
    sim = get_backend(f'{family}.simulator', remote_host=emulator.url, api_key='k', seed=2)
    assert within(sim.run(c, v, ['Z0 Z1', 'Z1'], shots=4000), exact)
    qpu = get_backend(f'{family}.qpu.aria-1', remote_host=emulator.url, api_key='k', seed=2)
    caps = qpu.capabilities
    expected = (f'{family}.qpu.aria-1', True, 25, ('gpi', 'gpi2', 'ms'))
    assert (caps.name, caps.noisy, caps.max_qubits, caps.native_gates) == expected
    res = qpu.run(c, v, ['Z0 Z1', 'Z1'], shots=2000)
    assert np.all(np.abs(res.expectations - exact) < 0.15)  # aria-1 noise model: close, not exact
    assert abs(res.expectations - exact).max() > 1e-3


def test_ionq_route_configuration(monkeypatch, emulator):
    monkeypatch.setenv('IONQ_REMOTE_HOST', emulator.url + '/v0.4')
    monkeypatch.setenv('IONQ_API_KEY', 'env-key-123')
    be = get_backend('cirq-ionq.simulator')
    assert be.remote_host == emulator.url and 'env-key-123' not in repr(be)
    assert be.run(Circuit(1).x(0), shots=5).counts[0, 1] == 5
    monkeypatch.delenv('IONQ_API_KEY')
    with pytest.raises(ValueError, match='IONQ_API_KEY'): get_backend('qiskit-ionq.simulator')
    with pytest.raises(ValueError, match="'qpu.<system>'"): get_backend('cirq-ionq.aria-1', api_key='k')
    with pytest.raises(ValueError, match='must be a URL'): get_backend('qiskit-ionq.simulator', remote_host='localhost',
                                                                       api_key='k')
    assert get_backend('qiskit-ionq.qpu.forte-1', api_key='k').capabilities.native_gates == ('gpi', 'gpi2', 'zz_native')


@pytest.mark.parametrize('family', ['cirq-ionq', 'qiskit-ionq'])
def test_ionq_route_rejected_key_is_not_leaked(family):
    with EmulatorServer(EmulatorConfig(api_keys=('the-right-key',))) as srv:
        opts = {'max_retry_seconds': 1} if family == 'cirq-ionq' else {}
        be = get_backend(f'{family}.simulator', remote_host=srv.url, api_key='wrong-secret-key', **opts)
        with pytest.raises(Exception) as e: be.run(Circuit(1).h(0), shots=10)
    assert 'wrong-secret-key' not in str(e.value) and 'wrong-secret-key' not in repr(e.value)


@pytest.mark.filterwarnings('ignore:Failed to get qubits')  # qiskit-ionq's own warning about the unreachable URL
def test_qiskit_ionq_warns_when_dotenv_overrides_url(monkeypatch, emulator):
    import qiskit_ionq.helpers
    monkeypatch.setattr(
        qiskit_ionq.helpers, 'dotenv_values', lambda *a, **k: {'IONQ_API_URL': 'http://127.0.0.1:1/v0.4'}
    )
    be = get_backend('qiskit-ionq.simulator', remote_host=emulator.url, api_key='k')
    with pytest.warns(UserWarning, match='a .env file sets the IonQ API URL to http://127.0.0.1:1/v0.4'):
        be.ionq_backend('qis')
