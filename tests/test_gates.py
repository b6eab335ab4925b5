"Every gate record: unitarity, inverse, structure, derived shift rules, and Cirq, Qiskit and IonQ round trips."
import cirq
import numpy as np
import pytest
from qiskit.quantum_info import Operator

from qstore.backends.convert import from_cirq, from_qiskit, to_cirq, to_qiskit
from qstore.circuits import Circuit, Param
from qstore.gates import GATES, gate_freqs, inverse_of, matrix_rate
from qstore.gradients.shift import shift_rule
from qstore.ionq.serialize import from_ionq_json, to_ionq_json

NAMES = sorted(GATES)
ANGLES = [(n, j) for n in NAMES for j in range(GATES[n].num_angles)]
PAULI = {'I': np.eye(2), 'X': np.array([[0, 1], [1, 0]]), 'Y': np.array([[0, -1j], [1j, 0]]), 'Z': np.diag([1, -1])}
QUBITS = (2, 0)  # non-adjacent and reversed on 3 qubits: catches qubit-order mistakes at every border


def rng_for(name): return np.random.default_rng(sum(map(ord, name)))


def random_angles(g, rng) -> list:
    "Angles in the gate's unit; a native 'theta' inside IonQ's [0, 1/4], native phases in [-1, 1]."
    if g.unit != 'turn': return [float(x) for x in rng.uniform(-2 * np.pi, 2 * np.pi, g.num_angles)]
    return [float(rng.uniform(0, 0.25) if a == 'theta' else rng.uniform(-1, 1)) for a in g.angle_names]


def assert_equal_up_to_phase(a, b, atol=1e-10):
    k = np.argmax(np.abs(b))
    phase = a.flat[k] / b.flat[k]
    assert abs(abs(phase) - 1) < atol
    np.testing.assert_allclose(a, phase * b, atol=atol)


def placed(name, angles, n=3):
    "The gate alone in an n-qubit circuit, on QUBITS."
    return Circuit(n).append(name, QUBITS[:GATES[name].num_qubits], *angles)


def cirq_unitary_in_qstore_order(cc, n=3):
    u = cc.unitary(qubit_order=cirq.LineQubit.range(n))
    rev = [int(format(i, f'0{n}b')[::-1], 2) for i in range(2 ** n)]  # cirq: LineQubit(0) is the most significant bit
    return u[np.ix_(rev, rev)]


@pytest.mark.parametrize('name', NAMES)
def test_unitary_and_structure(name):
    g, rng = GATES[name], rng_for(name)
    m = g.matrix(*rng.uniform(-3, 3, (g.num_angles, 4)))
    d = 2 ** g.num_qubits
    assert m.shape == (4 if g.num_angles else 1, d, d)
    np.testing.assert_allclose(m @ np.conj(np.swapaxes(m, -1, -2)), np.broadcast_to(np.eye(d), m.shape), atol=1e-12)
    if g.kind == 'diag': np.testing.assert_allclose(m, m * np.eye(d), atol=0)
    if g.kind == 'perm':  # the record's index map is the matrix, placed anywhere
        i = np.arange(8)
        np.testing.assert_array_equal(placed(name, []).unitary(), np.eye(8)[g.perm(QUBITS[:g.num_qubits], i)].T)
    if g.control:  # |0><0| (x) I + |1><1| (x) U_control
        a = rng.uniform(-3, 3, g.num_angles)
        np.testing.assert_allclose(g.matrix(*a)[0][2:, 2:], GATES[g.control].matrix(*a)[0], atol=1e-12)
        np.testing.assert_allclose(g.matrix(*a)[0][:2, :2], np.eye(2), atol=1e-12)
    if g.pauli:  # U(t) = exp(-itP/2) up to a global phase
        P = PAULI[g.pauli[0]] if len(g.pauli) == 1 else np.kron(PAULI[g.pauli[0]], PAULI[g.pauli[1]])
        t = float(rng.uniform(-3, 3))
        assert_equal_up_to_phase(g.matrix(t)[0], np.cos(t / 2) * np.eye(d) - 1j * np.sin(t / 2) * P)


@pytest.mark.parametrize('name', NAMES)
def test_inverse(name):
    g, rng = GATES[name], rng_for(name)
    for _ in range(3):
        a = tuple(random_angles(g, rng))
        inv, b = inverse_of(g, a)
        assert_equal_up_to_phase(GATES[inv].matrix(*b)[0] @ g.matrix(*a)[0], np.eye(2 ** g.num_qubits))
        c = Circuit(3).append(name, QUBITS[:g.num_qubits], *a)
        assert_equal_up_to_phase(c.inverse().unitary() @ c.unitary(), np.eye(8))


@pytest.mark.parametrize('name, j', ANGLES)
def test_derived_shift_rule_and_matrix_derivative(name, j):
    "The shift rule derived from the spectrum, and the exact matrix derivative, against central differences."
    g, rng = GATES[name], rng_for(f"{name}{j}")
    d, h = 2 ** g.num_qubits, 1e-5
    psi = rng.normal(size=d) + 1j * rng.normal(size=d)
    psi /= np.linalg.norm(psi)
    O = rng.normal(size=(d, d)) + 1j * rng.normal(size=(d, d))
    O = O + O.conj().T
    rule = shift_rule(name, j)
    assert len(rule) == 2 * round(max(gate_freqs(g, j)) / min(gate_freqs(g, j)))  # R equidistant frequencies: 2R terms
    for _ in range(4):
        a = np.array(random_angles(g, rng))

        def U(x):
            b = a.copy()
            b[j] = x
            return g.matrix(*b)[0]

        def f(x): return float(np.real(np.conj(U(x) @ psi) @ O @ (U(x) @ psi)))

        t = a[j]
        fd = (f(t + h) - f(t - h)) / (2 * h)
        assert abs(sum(c * f(t + s) for s, c in rule) - fd) < 1e-6 * max(1, abs(fd))
        r = matrix_rate(g, j)
        dU = r / 2 * (U(t + np.pi / (2 * r)) - U(t - np.pi / (2 * r)))
        np.testing.assert_allclose(dU, (U(t + h) - U(t - h)) / (2 * h), atol=1e-6 * max(1, r))


@pytest.mark.parametrize('name', NAMES)
def test_cirq_round_trip(name):
    g, rng = GATES[name], rng_for(name)
    if g.cirq is None: pytest.skip(f"'{name}' has no Cirq form")
    a = random_angles(g, rng)
    c = placed(name, a)
    cc = to_cirq(c)
    np.testing.assert_allclose(cirq_unitary_in_qstore_order(cc), c.unitary(), atol=1e-12)  # exactly equal
    back = from_cirq(cc, qubits=cirq.LineQubit.range(3))
    assert_equal_up_to_phase(back.unitary(), c.unitary())
    if g.num_angles and not g.cirq.startswith('cirq_ionq.'):  # symbolic template: sympy angles and back
        s = placed(name, [Param(f'p{k}') * 0.5 + 0.1 for k in range(g.num_angles)])
        row = rng.uniform(-2, 2, g.num_angles)
        back = from_cirq(to_cirq(s), qubits=cirq.LineQubit.range(3))
        assert_equal_up_to_phase(back.unitary(back.bind(dict(zip(s.parameters, row)))), s.unitary(row))


@pytest.mark.parametrize('name', NAMES)
def test_qiskit_round_trip(name):
    g, rng = GATES[name], rng_for(name)
    if g.qiskit is None: pytest.skip(f"'{name}' has no Qiskit form")
    a = random_angles(g, rng)
    c = placed(name, a)
    qc = to_qiskit(c)
    np.testing.assert_allclose(Operator(qc).data, c.unitary(), atol=1e-12)  # same qubit order, exactly equal
    assert_equal_up_to_phase(from_qiskit(qc).unitary(), c.unitary())
    if g.num_angles:  # symbolic template: Parameter expressions and back
        s = placed(name, [Param(f'p{k}') * 0.5 + 0.1 for k in range(g.num_angles)])
        row = rng.uniform(-1, 1, g.num_angles)
        back = from_qiskit(to_qiskit(s))
        assert_equal_up_to_phase(back.unitary(back.bind(dict(zip(s.parameters, row)))), s.unitary(row))


@pytest.mark.parametrize('name', NAMES)
def test_ionq_json_round_trip(name):
    "Written with the record's IonQ name, or as its decomposition when IonQ lacks the gate; read back equal."
    g, rng = GATES[name], rng_for(name)
    if g.ionq is None and g.decompose is None: pytest.skip(f"'{name}' has no IonQ JSON form")
    c = placed(name, random_angles(g, rng))
    data = to_ionq_json(c, gateset='native' if g.native else 'qis')
    if g.ionq: assert data['circuit'][0]['gate'] == g.ionq
    assert_equal_up_to_phase(from_ionq_json(data).unitary(), c.unitary())
