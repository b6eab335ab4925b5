"Black-box checks of the circuit model and the batched simulators."
import numpy as np
import pytest
from scipy import stats

from qstore.circuits import Circuit, Param
from qstore.gates import GATES
from qstore.simulator import DensityMatrixSimulator, NoiseModel, StatevectorSimulator


def random_circuit(n, n_ops, rng, n_params=4):
    c = Circuit(n)
    ps = c.parameters_vector('p', n_params)
    names = [g for g in GATES if GATES[g].num_qubits <= n]
    for _ in range(n_ops):
        g = GATES[rng.choice(names)]
        qs = rng.choice(n, g.num_qubits, replace=False).tolist()
        angles = [ps[rng.integers(n_params)] * rng.uniform(-2, 2) + rng.uniform(-1, 1) if rng.random() < 0.6
                  else rng.uniform(-3, 3) for _ in range(g.num_angles)]
        c.append(g.name, qs, *angles)
    return c


@pytest.mark.parametrize('n', [1, 2, 3, 5, 8])
def test_batched_statevector_equals_per_row_loop(n):
    rng = np.random.default_rng(n)
    c = random_circuit(n, 40, rng)
    vals = rng.uniform(-np.pi, np.pi, (6, c.num_parameters))
    sim = StatevectorSimulator()
    batched = sim.statevector(c, vals)
    looped = np.concatenate([sim.statevector(c, v[None]) for v in vals])
    np.testing.assert_allclose(batched, looped, atol=1e-12)
    if n <= 5:  # and both equal the dense unitary of each row
        np.testing.assert_allclose(batched, [c.unitary(v)[:, 0] for v in vals], atol=1e-10)
    np.testing.assert_allclose(np.linalg.norm(batched, axis=1), 1, atol=1e-12)


def test_sampling_frequencies_pass_chi_square():
    rng = np.random.default_rng(11)
    c = random_circuit(3, 25, rng)
    vals = rng.uniform(-np.pi, np.pi, (4, c.num_parameters))
    sim = StatevectorSimulator(seed=5)
    p = sim.probabilities(c, vals)
    counts = sim.sample(c, vals, shots=50_000)
    for row_p, row_c in zip(p, counts):
        keep = row_p * 50_000 > 5  # chi-square needs expected counts > 5
        expected = row_p[keep] * 50_000
        observed = row_c[keep]
        expected *= observed.sum() / expected.sum()
        assert stats.chisquare(observed, expected).pvalue > 1e-3
    # seeded: same seed, same counts
    np.testing.assert_array_equal(StatevectorSimulator().sample(c, vals, 100, seed=3),
                                  StatevectorSimulator().sample(c, vals, 100, seed=3))


def test_noise_reduces_to_ideal_and_matches_closed_forms():
    rng = np.random.default_rng(2)
    c = random_circuit(3, 20, rng)
    vals = rng.uniform(-1, 1, (3, c.num_parameters))
    obs = ['Z0', 'Z1 Z2', 'X0 Y1']
    ideal = StatevectorSimulator().expectation(c, vals, obs)
    np.testing.assert_allclose(DensityMatrixSimulator(NoiseModel()).expectation(c, vals, obs), ideal, atol=1e-12)
    # one RY(t) then depolarizing p: <Z> = (1 - 4p/3) cos t; readout flips p01, p10 map <Z> -> (1 - p01 - p10)<Z>
    # + p10 - p01
    t = np.array([[0.3], [1.1], [2.5]])
    one = Circuit(1)
    one.ry(0, one.parameter('t'))
    for p in (0.05, 0.3):
        np.testing.assert_allclose(DensityMatrixSimulator(NoiseModel(p1=p)).expectation(one, t, ['Z0'])[:, 0],
                                   (1 - 4 * p / 3) * np.cos(t[:, 0]), atol=1e-12)
    np.testing.assert_allclose(DensityMatrixSimulator(NoiseModel(p01=0.1, p10=0.05)).expectation(one, t, ['Z0'])[:, 0],
                               0.85 * np.cos(t[:, 0]) + 0.05 - 0.1, atol=1e-12)
    # a CNOT followed by two-qubit depolarizing p2 on a Bell state: <ZZ> = <XX> = 1 - 16 p2 / 15
    bell = Circuit(2).h(0).cnot(0, 1)
    np.testing.assert_allclose(DensityMatrixSimulator(NoiseModel(p2=0.1)).expectation(bell, None, ['Z0 Z1', 'X0 X1']),
                               [[1 - 1.6 / 15] * 2], atol=1e-12)


def test_density_matrix_ten_qubits():
    "A 10-qubit GHZ state: exact with no noise, and damped (not destroyed) with the forte-1 preset."
    c = Circuit(10).h(0)
    for q in range(9): c.cnot(q, q + 1)
    obs = ['Z0 Z9', 'X0 X1 X2 X3 X4 X5 X6 X7 X8 X9', 'Z9']
    np.testing.assert_allclose(DensityMatrixSimulator().expectation(c, None, obs), [[1, 1, 0]], atol=1e-12)
    noisy = DensityMatrixSimulator('forte-1').expectation(c, None, obs)[0]
    assert 0.8 < noisy[0] < 0.999 and 0.7 < noisy[1] < 0.999 and abs(noisy[2]) < 0.02


@pytest.mark.parametrize('build, message', [
    (lambda: Circuit(2).rx(2, 0.1), 'out of range'),
    (lambda: Circuit(2).cnot(1, 1), 'distinct qubits'),
    (lambda: Circuit(2).append('rx', 0), 'takes 1 angle'),
    (lambda: Circuit(2).append('cnot', [0, 1], 0.3), 'takes 0 angle'),
    (lambda: Circuit(2).append('rz', [0, 1], 0.3), 'acts on 1 qubit'),
    (lambda: Circuit(2).rx(0, float('nan')), 'finite'),
    (lambda: Circuit(2).rx(0, Param('a') * Param('b')), 'affine in ONE parameter'),
    (lambda: Circuit(2).append('toffoli', [0, 1]), 'unknown gate'),
    (lambda: Circuit(0), 'positive integer'),
])
def test_construction_errors(build, message):
    with pytest.raises((ValueError, TypeError), match=message.replace('(', r'\(')): build()


def test_binding_errors():
    c = Circuit(2)
    a = c.parameter('a')
    c.rx(0, a).ry(1, 2 * a)
    sim = StatevectorSimulator()
    with pytest.raises(ValueError, match=r"NaN or inf at row 1, column 0 \(parameter 'a'\)"):
        sim.statevector(c, [[0.1], [np.inf]])
    with pytest.raises(ValueError, match=r'must have shape \(B, 1\)'):
        sim.statevector(c, np.zeros((3, 2)))
    with pytest.raises(TypeError, match='must be numeric'):
        sim.statevector(c, [['x']])
