"Gradient methods: shift rules vs finite differences, agreement between methods, SPSA statistics, call counts."
import numpy as np
import pytest

from qstore.backends.base import LocalBackend
from qstore.circuits import Circuit
from qstore.gates import GATES
from qstore.ml.encoding import DataEncoder
from qstore.gradients.natural import metric_tensor
from qstore.gradients.adaptive import AdaptiveGradient
from qstore.gradients.spsa import SPSAGradientEstimator
from qstore.gradients.adjoint import adjoint
from qstore.gradients.finite_diff import finite_diff
from qstore.gradients.shift import parameter_shift, shift_table
from qstore.ionq.serialize import native_angle_columns
from qstore.gradients.core import select_params
from qstore.ml.layers import HardwareEfficientQuantumLayer, QuantumModel

OBS = ['Z0', 'X1', 'Y0 Z1', '0.3*X0 X1 + Z1']

PARAM_GATES = sorted(n for n, g in GATES.items() if g.num_angles)  # every registered gate with angles


def sandwich(gate):
    "One gate under test, all its angles parameters, between fixed gates so every observable depends on it."
    g = GATES[gate]
    c = Circuit(2)
    p = c.parameters_vector('p', g.num_angles)
    c.ry(0, 0.7).rx(1, -0.4).cnot(0, 1).gpi2(0, 0.13)
    c.append(gate, ((0, 1), (1, 0))[PARAM_GATES.index(gate) % 2][:g.num_qubits], *p)  # both qubit orders occur
    c.ry(1, 0.9).cnot(1, 0).rx(0, 0.2)
    return c


def angle_samples(gate, rng):
    if gate == 'ms':  # phases anywhere in [-1, 1] incl. the ends; angle across [0, 0.25] incl. both ends
        return [
            np.array([p0, p1, t])
            for p0, p1, t in [(1.0, -1.0, 0.25), (-1.0, 0.5, 0.0), (0.99, 0.0, 0.249)]
            + [tuple(rng.uniform([-1, -1, 0], [1, 1, 0.25])) for _ in range(5)]
        ]
    if GATES[gate].native and GATES[gate].num_qubits == 1:  # gpi, gpi2 phases
        return [np.array([x]) for x in [-1.0, 1.0, 0.999] + list(rng.uniform(-1, 1, 5))]
    return [np.array([x]) for x in [0.0, np.pi, -np.pi] + list(rng.uniform(-2 * np.pi, 2 * np.pi, 5))]


@pytest.mark.parametrize('gate', PARAM_GATES)
@pytest.mark.parametrize('native_ranges', [False, True])
def test_shift_rule_matches_central_differences(gate, native_ranges):
    if native_ranges and not GATES[gate].native: pytest.skip('IonQ ranges only concern native gates')
    rng = np.random.default_rng(hash(gate) % 2 ** 32)
    c = sandwich(gate)
    for v in angle_samples(gate, rng):
        ps = parameter_shift(c, v[None], OBS, wrt=None, native_ranges=native_ranges).jacobian
        fd = finite_diff(c, v[None], OBS, wrt=None, h=1e-5).jacobian
        np.testing.assert_allclose(ps, fd, atol=1e-6, err_msg=f"{gate} at {v}")


def test_native_shifts_stay_in_ionq_ranges():
    rng = np.random.default_rng(5)
    c = sandwich('ms')
    c2 = sandwich('gpi2')
    c3 = sandwich('gpi')
    for circ in (c, c2, c3):
        for v in angle_samples('ms' if circ is c else 'gpi', rng):
            table, _, _ = shift_table(circ, circ.angle_table(v[None]), select_params(circ, None), native_ranges=True)
            phases, ms, _ = native_angle_columns(circ)
            assert (np.abs(table[:, phases]) <= 1).all()
            for _, _, t in ms: assert ((table[:, t] >= 0) & (table[:, t] <= 0.25)).all()


def random_model(n, depth, rng, entangler='cnot_ring'):
    m = QuantumModel(DataEncoder('angle', n_features=n), HardwareEfficientQuantumLayer(n, depth, entangler))
    return m, m.values(rng.uniform(0, np.pi, (5, n)), m.init_weights(seed=int(rng.integers(1e6)), strategy='uniform'))


@pytest.mark.parametrize('n, depth, entangler',
                         [(2, 2, 'cnot_ring'), (3, 2, 'cz'), (4, 3, 'ms'), (5, 2, 'cnot_linear')])
@pytest.mark.parametrize('readout', ['Z0', 'all'])
def test_adjoint_shift_and_differences_agree(n, depth, entangler, readout):
    rng = np.random.default_rng(n * 10 + depth)
    m, v = random_model(n, depth, rng, entangler)
    obs = ['Z0'] if readout == 'Z0' else [f'Z{i}' for i in range(n)]
    for wrt in ('weights', None):
        ja = adjoint(m.circuit, v, obs, wrt=wrt).jacobian
        jp = parameter_shift(m.circuit, v, obs, wrt=wrt).jacobian
        jf = finite_diff(m.circuit, v, obs, wrt=wrt, h=1e-6).jacobian
        np.testing.assert_allclose(ja, jp, atol=1e-10)
        np.testing.assert_allclose(ja, jf, atol=1e-7)


class CountingBackend(LocalBackend):
    "LocalBackend that records every call it receives."
    def run(self, *a, **k):
        res = super().run(*a, **k)
        self.log.append(res.n_circuits)
        return res


def test_parameter_shift_is_one_backend_call():
    rng = np.random.default_rng(1)
    m, v = random_model(4, 2, rng)
    be = CountingBackend()
    be.log = []
    res = parameter_shift(m.circuit, v, ['Z0', 'Z1'], be)
    P = m.n_circuit_weights
    assert be.log == [v.shape[0] * (1 + 2 * P)] and res.calls == 1 and res.circuits == be.log[0]
    be.log = []
    parameter_shift(m.circuit, v, ['Z0', 'X1'], be, shots=100, seed=1)
    assert len(be.log) == 1


def test_spsa_gain_sequence():
    est = SPSAGradientEstimator(a=0.3, c=0.15, A=7, seed=0)
    for k in range(3):
        assert est.gains(k) == pytest.approx((0.3 / (7 + k + 1) ** 0.602, 0.15 / (k + 1) ** 0.101), rel=1e-15)
    est.step()
    assert est.gains() == est.gains(1)


def test_spsa_mean_approaches_true_gradient():
    rng = np.random.default_rng(2)
    m, v = random_model(3, 2, rng)
    exact = adjoint(m.circuit, v, ['Z0'], wrt='weights').jacobian
    ests = np.stack([SPSAGradientEstimator(c=0.01, seed=s).jacobian(m.circuit, v,
                                                                    ['Z0']).jacobian for s in range(3000)])
    mean, sem = ests.mean(0), ests.std(0) / np.sqrt(len(ests))
    assert (np.abs(mean - exact) < 5 * sem + 1e-4).all()


def test_sampled_gradients_are_unbiased():
    rng = np.random.default_rng(3)
    m, v = random_model(3, 1, rng)
    exact = parameter_shift(m.circuit, v, ['Z0', 'X1 X2'], wrt='weights').jacobian
    be = LocalBackend(seed=11)
    runs = [parameter_shift(m.circuit, v, ['Z0', 'X1 X2'], be, shots=2000) for _ in range(20)]
    est = np.mean([r.jacobian for r in runs], axis=0)
    err = np.sqrt(np.mean([r.stderr ** 2 for r in runs], axis=0) / len(runs))
    z = (est - exact) / np.maximum(err, 1e-12)
    assert np.abs(z).max() < 5, np.abs(z).max()


def test_metric_tensor_textbook_value():
    c = Circuit(1)
    t = c.parameters_vector('t', 2)
    c.rx(0, t[0]).ry(0, t[1])
    for t0 in (0.0, 0.3, 1.2):
        v = np.array([[t0, -0.8]])
        np.testing.assert_allclose(metric_tensor(c, v)[0], np.diag([0.25, np.cos(t0) ** 2 / 4]), atol=1e-12)


def test_adaptive_choices():
    rng = np.random.default_rng(4)
    m, v = random_model(4, 2, rng)
    ag = AdaptiveGradient()
    assert ag.choose('local', m.circuit)[0] == 'adjoint'
    assert ag.choose(LocalBackend(noise='aria-1'), m.circuit)[0] == 'parameter_shift'
    assert ag.choose('local', m.circuit, shots=1000)[0] == 'parameter_shift'  # 2P = 32 circuits per row
    assert AdaptiveGradient(budget=10).choose('local', m.circuit, shots=1000)[0] == 'spsa'
    big, _ = random_model(8, 6, rng)
    method, reason = ag.choose('local', big.circuit, shots=1000)
    assert method == 'spsa' and 'spsa: 3 circuits vs 2P=192' in reason
