"""IonQ native-gate compiler: equivalence on random circuits, legal output, gate-count bounds, and cirq-ionq
comparison."""
import dataclasses
import numpy as np
import pytest
from qstore.testing import reference_circuit, reference_values
from qstore.circuits import Circuit, Param
from qstore.gates import GATES, inverse_of
from qstore.ionq.compiler import IonQNativeGateCompiler, compile_stats, native_violations, verify
from qstore.ionq.systems import SYSTEMS
from qstore.gradients.adjoint import adjoint
from qstore.simulator import StatevectorSimulator

TARGETS = ('aria', 'forte')
SPECIAL = (0.0, 0.25, 0.5, np.pi / 2, np.pi, -np.pi / 2, 2 * np.pi)  # hit the short forms and the folds


def random_circuit(rng, n, depth, n_params=3, symbolic=0.5):
    """Random template over every qstore gate; angles constant (random or special) or affine in one of `n_params`
    parameters."""
    c = Circuit(n, f'rand{n}x{depth}')
    ps = c.parameters_vector('p', n_params)
    names = [g for g, d in GATES.items() if d.num_qubits <= n]
    for _ in range(depth):
        g = GATES[names[rng.integers(len(names))]]
        qs = rng.choice(n, g.num_qubits, replace=False).tolist()
        angles = []
        for _ in range(g.num_angles):
            if rng.random() < symbolic:
                angles.append(ps[rng.integers(n_params)] * float(rng.normal(0, 2)) + float(rng.normal()))
            else: angles.append(float(rng.normal(0, 3)) if rng.random() < 0.5 else float(rng.choice(SPECIAL)))
        c.append(g.name, qs, *angles)
    return c


def assert_native(compiled, values):
    assert {op.gate for op in compiled.circuit.ops} <= set(SYSTEMS[compiled.stats.system].native_gates)
    assert native_violations(compiled.circuit, compiled.angles(values), compiled.target) == []


@pytest.mark.parametrize('target', TARGETS)
def test_random_circuits_all_gates(target):
    rng, used = np.random.default_rng(1 if target == 'aria' else 2), set()
    for i in range(40):
        n = 1 + i % 6
        c = random_circuit(rng, n, int(rng.integers(4, 30)))
        used |= {op.gate for op in c.ops}
        for drop in (True, False):
            out = IonQNativeGateCompiler(target, drop_final_z=drop).compile(c)
            res = verify(c, out, bindings=3, seed=i)
            assert res.ok, (res, c.ops)
            assert res.mode == ('measurement' if drop else 'exact')
    assert used == set(GATES), set(GATES) - used  # every qstore gate was exercised


@pytest.mark.parametrize('target', TARGETS)
def test_templates_stay_correct_and_legal_across_bindings(target):
    rng, sim = np.random.default_rng(3), StatevectorSimulator()
    for i in range(12):
        c = random_circuit(rng, 2 + i % 3, 25, symbolic=0.8)
        out = IonQNativeGateCompiler(target).compile(c)
        v = rng.uniform(-25, 25, (200, c.num_parameters))  # wide: every fold and sign flip happens
        assert_native(out, v)
        np.testing.assert_allclose(sim.probabilities(out.circuit, out.native_values(v)), sim.probabilities(c, v),
                                   atol=1e-10)
        assert verify(c, IonQNativeGateCompiler(target, drop_final_z=False).compile(c), v[:5]).ok


@pytest.mark.parametrize('target', TARGETS)
def test_one_entangling_gate_per_cnot_or_cz(target):
    rng = np.random.default_rng(4)
    for _ in range(20):
        c = Circuit(4)
        for _ in range(15):
            g = ['cnot', 'cz', 'h', 'rx', 't', 'ry'][rng.integers(6)]
            qs = rng.choice(4, GATES[g].num_qubits, replace=False).tolist()
            c.append(g, qs, *rng.normal(size=GATES[g].num_angles))
        s = compile_stats(c, target, drop_final_z=False)
        assert s.after_2q <= sum(op.gate in ('cnot', 'cz') for op in c.ops)


# native two-qubit gates per source gate: (constant angles, symbolic with split_symbolic=True, symbolic with False)
TWO_QUBIT_BOUND = {'cnot': (1,), 'cz': (1,), 'swap': (3,), 'crx': (1, 2, 1), 'cry': (1, 2, 1), 'crz': (1, 2, 1),
                   'xx': (1, 2, 1), 'yy': (1, 2, 1), 'zz': (1, 2, 1), 'ms': (1, 2, 1), 'zz_native': (1, 2, 1)}


@pytest.mark.parametrize('target', TARGETS)
@pytest.mark.parametrize('gate', sorted(TWO_QUBIT_BOUND))
def test_two_qubit_gate_bounds(target, gate):
    rng = np.random.default_rng(5)
    for angle in (1.234, np.pi / 3, -2.9):
        c = Circuit(2).append(gate, (0, 1), *[angle] * GATES[gate].num_angles)
        assert compile_stats(c, target, drop_final_z=False).after_2q == TWO_QUBIT_BOUND[gate][0]
    if GATES[gate].num_angles:
        c = Circuit(2)
        p = c.parameter('p')
        c.append(gate, (0, 1), *[p * float(rng.uniform(-0.3, 0.3)) + 0.02 for _ in range(GATES[gate].num_angles)])
        for split, bound in ((True, TWO_QUBIT_BOUND[gate][1]), (False, TWO_QUBIT_BOUND[gate][2])):
            out = IonQNativeGateCompiler(target, drop_final_z=False, split_symbolic=split).compile(c)
            assert out.stats.after_2q == bound
            small = np.array([[0.1], [-0.2]])  # |angle| < 0.1: in range for a single gate too
            assert verify(c, out, small).ok


@pytest.mark.parametrize('target', TARGETS)
def test_single_qubit_runs_merge(target):
    """Each run of constant one-qubit gates between two-qubit gates costs <= 2 native gates (<= 3 for an exact final
    run)."""
    rng = np.random.default_rng(6)
    one_q = [g for g, d in GATES.items() if d.num_qubits == 1]
    for _ in range(10):
        c, runs = Circuit(3), np.zeros(3, dtype=int)
        for layer in range(4):
            for q in range(3):
                for _ in range(int(rng.integers(3, 7))):
                    g = one_q[rng.integers(len(one_q))]
                    c.append(g, q, *rng.normal(size=GATES[g].num_angles))
            runs += 1
            if layer < 3:
                a, b = rng.choice(3, 2, replace=False)
                c.cnot(int(a), int(b))
                runs[[a, b]] += 1
        assert compile_stats(c, target).after_1q <= 2 * runs.sum()
        assert compile_stats(c, target, drop_final_z=False).after_1q <= 2 * runs.sum() + 3
    c = Circuit(1)
    for g in ('h', 't', 'sx', 'y', 's', 'h', 'tdg', 'sxdg'): c.append(g, 0)
    assert compile_stats(c, target).after_1q <= 2 and compile_stats(c, target, drop_final_z=False).after_1q <= 3


@pytest.mark.parametrize('target', TARGETS)
def test_virtual_z_costs_nothing(target):
    c = Circuit(2)
    th = c.parameter('th')
    c.rz(0, th).s(0).t(1).phase(1, 0.3).z(0).ms(0, 1, 0.1, 0.3, 0.2).rz(1, 2 * th).tdg(0)
    out = IonQNativeGateCompiler(target).compile(c)
    assert out.stats.after_2q == 1
    if target == 'aria': assert out.stats.after_1q == 0  # all Zs became MS phases or were dropped before measurement
    assert verify(c, out, bindings=5).ok
    exact = IonQNativeGateCompiler(target, drop_final_z=False).compile(c)
    assert verify(c, exact, bindings=5).ok and not verify(c, out, mode='exact', bindings=5).ok


@pytest.mark.parametrize('target', TARGETS)
def test_adjacent_inverses_cancel_and_rotations_merge(target):
    c = Circuit(3)
    th = c.parameter('th')
    pairs = [('cnot', (0, 1), ()), ('cz', (1, 2), ()), ('swap', (0, 2), ()), ('crx', (2, 0), (th,)),
             ('xx', (0, 1), (0.7,)),
             ('ms', (1, 2), (0.1, th, 0.2)), ('zz_native', (0, 2), (th * 0.3,)), ('gpi2', 1, (th,)),
             ('rx', 0, (th + 1,))]
    for g, qs, angles in pairs:
        c.append(g, qs, *angles)
        inv, inv_angles = inverse_of(GATES[g], tuple(Circuit(3).append(g, qs, *angles).ops[0].angles))
        c.append(inv, qs, *inv_angles)
        assert IonQNativeGateCompiler(target, drop_final_z=False).compile(c).circuit.ops == (), g
    merged = Circuit(2).xx(0, 1, 0.3).xx(1, 0, 0.4).xx(0, 1, 0.5)
    s = compile_stats(merged, target, drop_final_z=False)
    assert s.after_2q == 1  # one partial-angle gate for the whole chain


def test_constant_phases_are_normalised():
    c = random_circuit(np.random.default_rng(7), 3, 40, symbolic=0.0)
    for target in TARGETS:
        out = IonQNativeGateCompiler(target, drop_final_z=False).compile(c)
        assert out.circuit.num_parameters == 0
        for op in out.circuit.ops:
            if op.gate != 'zz_native' and op.angles:
                phases = [a.offset for a in op.angles[:2 if op.gate == 'ms' else 1]]
                assert all(-0.5 <= p <= 0.5 for p in phases), op


def _cirq_native_counts(circuit, values, gateset):
    import cirq
    from qstore.backends.convert import to_cirq
    out = cirq.optimize_for_target_gateset(to_cirq(circuit, values=values), gateset=gateset)
    ops = [op for op in out.all_operations() if not isinstance(op.gate, cirq.GlobalPhaseGate)]
    return sum(len(op.qubits) == 1 for op in ops), sum(len(op.qubits) == 2 for op in ops)


def _bound(circuit, row):
    "The circuit with every angle replaced by its value for one binding."
    out, A = Circuit(circuit.n_qubits), circuit.angle_table(row[None])[0]
    for op, (a, b) in zip(circuit.ops, circuit.angle_index()[3]): out.append(op.gate, op.qubits, *A[a:b])
    return out


@pytest.mark.parametrize('n,layers', [(4, 2), (8, 4)])
def test_fewer_one_qubit_gates_than_cirq_ionq(n, layers):
    cirq_ionq = pytest.importorskip('cirq_ionq')
    c = reference_circuit(n, layers)
    row = reference_values(c, 1)[0]
    report = {}
    for target, gateset in (('aria', cirq_ionq.AriaNativeGateset()), ('forte', cirq_ionq.ForteNativeGateset())):
        theirs_1q, theirs_2q = _cirq_native_counts(c, row, gateset)
        template, bound = compile_stats(c, target), compile_stats(_bound(c, row), target)
        report[target] = dict(cirq=(theirs_1q, theirs_2q), template=(template.after_1q, template.after_2q),
                              bound=(bound.after_1q, bound.after_2q))
        assert template.after_1q <= theirs_1q and bound.after_1q <= theirs_1q
        assert template.after_2q <= theirs_2q and bound.after_2q <= theirs_2q
    print(f"\nreference {n}x{layers}: {report}")


def test_gradients_pull_back_to_source_parameters():
    rng, sim = np.random.default_rng(8), StatevectorSimulator()
    c = reference_circuit(3, 1)
    g = c.parameter('g')
    c.xx(0, 2, g * 1.5 + 0.2).crz(2, 1, g).cry(0, 1, Param(c.parameters[1]))
    v, obs = rng.uniform(-3, 3, (3, c.num_parameters)), ['Z0', 'Z1 Z2']
    for target in TARGETS:
        out = IonQNativeGateCompiler(target).compile(c)
        native = adjoint(out.circuit, out.native_values(v), obs, wrt=None).jacobian
        eps = 1e-6
        fd = np.stack([(sim.expectation(c, v + eps * e, obs) - sim.expectation(c, v - eps * e, obs)) / (2 * eps)
                       for e in np.eye(c.num_parameters)], axis=-1)
        np.testing.assert_allclose(out.pullback(v, native), fd, atol=1e-7)


@pytest.mark.parametrize('target', TARGETS)
def test_ionq_json_round_trip(target):
    from qstore.ionq.serialize import from_ionq_json, to_ionq_json_batch
    c = reference_circuit(3, 2)
    c.yy(0, 2, Param(c.parameters[0]))
    out, v = IonQNativeGateCompiler(target).compile(c), reference_values(c, 4)
    sim = StatevectorSimulator()
    for row, job in zip(sim.probabilities(c, v), to_ionq_json_batch(out.circuit, out.native_values(v), 'native')):
        assert {g['gate'] for g in job['circuit']} <= {'gpi', 'gpi2', 'ms' if target == 'aria' else 'zz'}
        np.testing.assert_allclose(sim.probabilities(from_ionq_json(job))[0], row, atol=1e-10)


def test_cache_and_bind():
    c = reference_circuit(3, 1)
    a = IonQNativeGateCompiler('aria').compile(c)
    assert IonQNativeGateCompiler('aria-1').compile(reference_circuit(3, 1)) is a  # same structure: compiled once
    assert IonQNativeGateCompiler('aria', drop_final_z=False).compile(c) is not a
    x, w = np.ones((2, 3)), np.zeros(6)
    np.testing.assert_array_equal(a.bind(inputs=x, weights=w), a.native_values(c.bind(inputs=x, weights=w)))


def test_errors_are_clear():
    with pytest.raises(ValueError, match="use 'aria'"): IonQNativeGateCompiler('harmony')
    with pytest.raises(TypeError, match='qstore Circuit'): IonQNativeGateCompiler().compile('h 0')
    c = Circuit(2)
    c.xx(0, 1, c.parameter('t'))
    single = IonQNativeGateCompiler('aria', split_symbolic=False).compile(c)
    with pytest.raises(ValueError, match='split_symbolic=True'): single.native_values([[3.0]])
    with pytest.raises(ValueError, match="'exact' or 'measurement'"): verify(c, single, mode='unitary')
    with pytest.raises(ValueError, match='parameter values must have shape'): single.native_values(np.zeros((2, 3)))
    broken = dataclasses.replace(single, circuit=single.circuit.copy().h(0))
    res = verify(c, broken, [[0.1]])
    assert not res.ok and any("'h' is not a native gate" in p for p in res.problems)
