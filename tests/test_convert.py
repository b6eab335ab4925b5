"""Cirq/Qiskit interop: exact statevector agreement for random circuits over every gate, native-gate matrices, and every
conversion error."""
import numpy as np
import pytest
import sympy
import cirq
import qiskit_ionq
from qiskit import QuantumCircuit
from qiskit.circuit import Gate, Parameter
from qiskit.circuit.library import U2Gate
from qiskit.quantum_info import Statevector

from qstore.circuits import Circuit, Param
from qstore.gates import GATES, NATIVE_GATES
from qstore.backends.convert import (
    ConversionError,
    cirq_state_to_qstore,
    from_cirq,
    from_qiskit,
    qiskit_parameter_order,
    to_cirq,
    to_qiskit,
)
from qstore.ionq.routes import ionq_gateset, ionq_qis_circuit
from qstore.simulator import StatevectorSimulator

SV = StatevectorSimulator()
CIRQ_SIM = cirq.Simulator(dtype=np.complex128)
EPS = 1e-10


def random_circuit(n, rng, n_ops=30, symbolic_native=True):
    """Every gate of the library at least once (when it fits), random qubits and angles, some angles affine in
    parameters."""
    c = Circuit(n, f"random{n}")
    params = c.parameters_vector('w', 3) + [c.parameter('x', 'inputs')]
    names = [g for g in sorted(GATES) if GATES[g].num_qubits <= n]
    names += list(rng.choice(names, max(0, n_ops - len(names))))
    rng.shuffle(names)
    for g in names:
        gd = GATES[g]
        qs = [int(q) for q in rng.permutation(n)[:gd.num_qubits]]
        angles = []
        for _ in range(gd.num_angles):
            if rng.random() < 0.5 and (symbolic_native or g not in NATIVE_GATES):
                angles.append(params[rng.integers(len(params))] * rng.normal() + rng.normal())
            else: angles.append(float(rng.uniform(-4, 4)))
        c.append(g, qs, *angles)
    for p in params: c.ry(int(rng.integers(n)), p * 0.5)  # every parameter used at least once
    return c


def cirq_state(cc, n, resolver=None):
    return cirq_state_to_qstore(CIRQ_SIM.simulate(cc, resolver or {},
                                                  qubit_order=cirq.LineQubit.range(n)).final_state_vector, n)


def assert_same_template(back, c):
    "Same gates (cirq may reorder gates on disjoint qubits into moments); parameters in their groups."
    assert sorted(op.gate for op in back.ops) == sorted(op.gate for op in c.ops)
    assert set(back.parameters) == {a.param for op in c.ops for a in op.angles if a.param}
    group = {p: g for g, ps in c.groups.items() for p in ps}
    assert all(group[p] == g for g, ps in back.groups.items() for p in ps)


def bind_by_name(circuit, names, row):
    "Values array for `circuit` from a {name: value} view of another circuit's row."
    d = dict(zip(names, row))
    return circuit.bind({p: d[p] for p in circuit.parameters}) if circuit.num_parameters else np.zeros((1, 0))


@pytest.mark.parametrize('n', range(1, 9))
def test_random_circuits_all_gates_both_directions(n):
    rng = np.random.default_rng(100 + n)
    for symbolic_native in (False, True):
        c = random_circuit(n, rng, n_ops=30 if n < 6 else 45, symbolic_native=symbolic_native)
        row = rng.uniform(-2, 2, c.num_parameters)
        ref = SV.statevector(c, row)[0]
        # cirq: symbolic template resolved by cirq (native gates cannot hold symbols), and the bound conversion
        if not symbolic_native:
            cc = to_cirq(c)
            np.testing.assert_allclose(cirq_state(cc, n, dict(zip(c.parameters, row))), ref, atol=EPS)
            back = from_cirq(cc, groups={'x': 'inputs'})
            assert_same_template(back, c)
            np.testing.assert_allclose(SV.statevector(back, bind_by_name(back, c.parameters, row))[0], ref, atol=EPS)
        np.testing.assert_allclose(cirq_state(to_cirq(c, values=row), n), ref, atol=EPS)
        # qiskit: symbolic template bound by qiskit, the bound conversion, and the round trip
        qc = to_qiskit(c)
        np.testing.assert_allclose(Statevector(qc.assign_parameters(row[qiskit_parameter_order(qc, c)])).data, ref,
                                   atol=EPS)
        np.testing.assert_allclose(Statevector(to_qiskit(c, values=row)).data, ref, atol=EPS)
        back = from_qiskit(qc, groups=lambda p: 'inputs' if p == 'x' else 'weights')
        assert_same_template(back, c)
        np.testing.assert_allclose(SV.statevector(back, bind_by_name(back, c.parameters, row))[0], ref, atol=EPS)


def random_foreign_cirq(n, rng):
    "A Cirq circuit written the Cirq way: powers with global shifts, phased gates, controlled gates, global phase."
    q = cirq.LineQubit.range(n)
    s, t = sympy.symbols('s t')
    ops = []
    for _ in range(25):
        a, b = (int(v) for v in rng.permutation(n)[:2]) if n > 1 else (0, 0)
        e = float(rng.uniform(-2, 2))
        sym = [s, t][rng.integers(2)] * float(rng.normal()) + float(rng.normal())
        k = rng.integers(11 if n > 1 else 6)
        ops.append([lambda: cirq.XPowGate(exponent=sym, global_shift=float(rng.normal())).on(q[a]),
                    lambda: cirq.Y(q[a]) ** sym, lambda: cirq.Z(q[a]) ** e,
                    lambda: cirq.PhasedXPowGate(phase_exponent=sym, exponent=e, global_shift=0.3).on(q[a]),
                    lambda: cirq.PhasedXZGate(x_exponent=e, z_exponent=0.3, axis_phase_exponent=-0.7).on(q[a]),
                    lambda: cirq.global_phase_operation(np.exp(1j * e)),
                    lambda: cirq.CZ(q[a], q[b]) ** sym, lambda: cirq.CNOT(q[a], q[b]) ** e,
                    lambda: cirq.ZZPowGate(exponent=sym, global_shift=0.1).on(q[a], q[b]),
                    lambda: cirq.ControlledGate(cirq.rx(sym)).on(q[a], q[b]),
                    lambda: cirq.ControlledGate(cirq.Z ** e).on(q[a], q[b])][k]())
    return cirq.Circuit(ops + [cirq.measure(*q, key='m')])


@pytest.mark.parametrize('n', [1, 2, 3, 5])
def test_from_cirq_native_cirq_circuits_exact(n):
    rng = np.random.default_rng(n)
    cc = random_foreign_cirq(n, rng)
    imported = from_cirq(cc)
    vals = {'s': 0.37, 't': -1.1}
    expect = cirq_state(cirq.drop_terminal_measurements(cc), n, vals)
    np.testing.assert_allclose(SV.statevector(imported, imported.bind({p: vals[p] for p in imported.parameters}))[0],
                               expect, atol=EPS)
    dropped = from_cirq(cc, global_phase=False)  # same state up to a global phase
    psi = SV.statevector(dropped, dropped.bind({p: vals[p] for p in dropped.parameters}))[0]
    assert abs(abs(np.vdot(psi, expect)) - 1) < EPS


def test_from_qiskit_native_qiskit_circuits_exact():
    rng = np.random.default_rng(7)
    a, b = Parameter('a'), Parameter('b')
    qc = QuantumCircuit(4)
    qc.u(0.3, 2 * a + 0.1, -b, 0)
    for _ in range(30):
        i, j = (int(v) for v in rng.permutation(4)[:2])
        e = float(rng.uniform(-3, 3))
        k = rng.integers(7)
        if k == 0: qc.u(e, 2 * a + 0.1, -b, i)  # a is read before b, although P(-b) comes first
        elif k == 1: qc.append(U2Gate(a, e), [i])
        elif k == 2: qc.cp(0.5 * b - e, i, j)
        elif k == 3: qc.p(a, i)
        elif k == 4: qc.append(qiskit_ionq.MSGate(a, 0.2, 0.1 * b), [i, j])
        elif k == 5: qc.append(qiskit_ionq.ZZGate(-a), [i, j])
        else: qc.rzz(e, i, j)
    qc.global_phase = 0.3 * a - b + 0.2
    qc.barrier()
    qc.measure_all()
    imported = from_qiskit(qc, groups='inputs')
    assert imported.parameters == ['a', 'b'] and imported.groups == {'inputs': ['a', 'b']}  # order of first appearance
    bound = qc.remove_final_measurements(inplace=False).assign_parameters({a: 0.8, b: -0.4})
    np.testing.assert_allclose(SV.statevector(imported, [0.8, -0.4])[0], Statevector(bound).data, atol=EPS)


def test_qubit_mapping_cirq():
    g = cirq.GridQubit
    cc = cirq.Circuit(cirq.X(g(1, 0)), cirq.H(g(0, 1)))  # sorted: (0,1) -> 0, (1,0) -> 1
    assert [op.qubits for op in from_cirq(cc).ops] == [(1,), (0,)]
    assert [op.qubits for op in from_cirq(cc, qubits=[g(1, 0), g(0, 1)]).ops] == [(0,), (1,)]
    line = cirq.Circuit(cirq.X(cirq.LineQubit(2)))  # LineQubit(k) -> qubit k, idle qubits kept
    assert from_cirq(line).n_qubits == 3 and SV.probabilities(from_cirq(line))[0, 4] == pytest.approx(1)


def test_ionq_qis_rewrite_matches_up_to_phase():
    rng = np.random.default_rng(11)
    for n in (2, 3):
        c = random_circuit(n, rng, 25)
        row = rng.uniform(-1, 1, c.num_parameters)
        psi, chi = SV.statevector(c, row)[0], SV.statevector(ionq_qis_circuit(c), row)[0]
        assert abs(abs(np.vdot(psi, chi)) - 1) < EPS
    assert ionq_gateset([Circuit(1)])[0] == 'qis'  # an empty circuit is not "all native"


# ---- every conversion error, with the message a user needs

def _raises(fn, *needles, exc=ConversionError):
    with pytest.raises(exc) as e: fn()
    for s in needles: assert s in str(e.value), f"{s!r} not in {str(e.value)!r}"


@pytest.mark.parametrize('gate,cls',
                         [('gpi', 'GPIGate'), ('gpi2', 'GPI2Gate'), ('ms', 'MSGate'), ('zz_native', 'ZZGate')])
def test_error_symbolic_native_gate_to_cirq(gate, cls):
    c = Circuit(2).append(gate, [0, 1][:GATES[gate].num_qubits], *([Param('p')] + [0.1] * (GATES[gate].num_angles - 1)))
    _raises(lambda: to_cirq(c), f"cirq_ionq.{cls} does not accept symbolic angles", "to_cirq(circuit, values=row)")
    assert len(to_cirq(c, values=[0.3])) == 1  # bound values work
    assert from_qiskit(to_qiskit(c)).ops[0].angles[0].param == 'p'  # qiskit_ionq gates do take Parameters


def test_error_values_must_be_one_row():
    c = Circuit(1)
    c.rx(0, c.parameter('a'))
    _raises(lambda: to_cirq(c, values=[[0.1], [0.2]]), "ONE binding", exc=ValueError)
    _raises(lambda: to_qiskit(c, values=[[0.1], [0.2]]), "ONE binding", exc=ValueError)
    c.ry(0, c.parameter('b'))
    _raises(lambda: to_qiskit(c, values=[0.1, 0.2, 0.3]), "shape (B, 2)", exc=ValueError)


def test_errors_from_cirq():
    q0, q1, q2 = cirq.LineQubit.range(3)
    s, t = sympy.symbols('s t')
    unsupported = [cirq.MatrixGate(np.eye(2)).on(q0), cirq.H(q0) ** 0.5, cirq.SWAP(q0, q1) ** 0.5, cirq.ISWAP(q0, q1),
                   cirq.CCX(q0, q1, q2), cirq.ResetChannel().on(q0), cirq.ControlledGate(cirq.Y ** 0.5).on(q0, q1),
                   cirq.ControlledGate(cirq.rx(0.1), num_controls=2).on(q0, q1, q2)]
    for op in unsupported:
        _raises(lambda: from_cirq(cirq.Circuit(op)), f"cirq gate {type(op.gate).__name__} is not supported",
                "Supported:",
                "optimize_for_target_gateset")
    _raises(lambda: from_cirq(cirq.Circuit(cirq.rx(sympy.sin(s)).on(q0))), "not affine in s")
    _raises(lambda: from_cirq(cirq.Circuit(cirq.rx(s * t).on(q0))), "not affine in s")
    _raises(lambda: from_cirq(cirq.Circuit(cirq.rx(s + t).on(q0))), "depends on 2 parameters ['s', 't']",
            "ONE parameter")
    _raises(lambda: from_cirq(cirq.Circuit(cirq.rx(sympy.I * s).on(q0))), "complex")
    _raises(lambda: from_cirq(cirq.Circuit(cirq.XPowGate(exponent=0.1, global_shift=s).on(q0))), "cannot read")
    _raises(lambda: from_cirq(cirq.Circuit(cirq.measure(q0), cirq.X(q0))), "after it was measured", "terminal")
    _raises(lambda: from_cirq(cirq.Circuit(cirq.measure(q0, key='m'), cirq.X(q1).with_classical_controls('m'))),
            "has no gate")
    _raises(lambda: from_cirq(cirq.Circuit(cirq.X(q0), cirq.global_phase_operation(sympy.exp(sympy.I * s)))),
            "symbolic global phase")
    _raises(lambda: from_cirq(cirq.Circuit()), "acts on no qubits")
    _raises(lambda: from_cirq(cirq.Circuit(cirq.X(q0), cirq.X(q1)), qubits=[q0]), "not in qubits=")
    _raises(lambda: from_cirq(cirq.Circuit(cirq.X(q0)), qubits=[q0, q0]), "twice")
    _raises(lambda: from_cirq(cirq.Circuit(cirq.X(cirq.LineQubit(-1)))), "must be >= 0")
    ok = cirq.Circuit(cirq.rx(s).on(q0))
    _raises(lambda: from_cirq(ok, groups={'S': 'inputs'}), "groups names parameter(s) ['S']", "its parameters: ['s']")
    _raises(lambda: from_cirq(ok, groups=3), "groups must be", exc=TypeError)


def test_errors_from_qiskit():
    a, b = Parameter('a'), Parameter('b')
    def qc_with(build, n=2, clbits=0):
        qc = QuantumCircuit(n, clbits)
        build(qc)
        return qc
    _raises(lambda: from_qiskit(qc_with(lambda q: q.ccx(0, 1, 2), 3)),
            "'ccx' on qubits [0, 1, 2] (CCXGate) is not supported",
            "Supported:", "transpile")
    _raises(lambda: from_qiskit(qc_with(lambda q: q.append(Gate('zz', 2, [0.1]), [0, 1]))),
            "'zz' on qubits [0, 1] (Gate)", "not supported")
    _raises(lambda: from_qiskit(qc_with(lambda q: q.append(Gate('rx', 1, [0.1]), [1]))), "'rx' on qubits [1] (Gate)",
            "not supported")
    _raises(lambda: from_qiskit(qc_with(lambda q: q.reset(0))), "'reset' on qubits [0]", "not supported")
    _raises(lambda: from_qiskit(qc_with(lambda q: q.rx(a.sin(), 0))), "not affine in a")
    _raises(lambda: from_qiskit(qc_with(lambda q: q.rx(a * b, 0))), "not affine in a")
    _raises(lambda: from_qiskit(qc_with(lambda q: q.rx(a + b, 0))), "depends on 2 parameters ['a', 'b']")
    _raises(lambda: from_qiskit(qc_with(lambda q: q.rx(1j * a, 0))), "complex")
    _raises(lambda: from_qiskit(qc_with(lambda q: (q.measure(0, 0), q.x(0)), 1, 1)), "after it was measured")
    def cond(q):
        q.measure(0, 0)
        with q.if_test((q.clbits[0], 1)): q.x(1)
    _raises(lambda: from_qiskit(qc_with(cond, 2, 1)), "'if_else'", "not supported")
    _raises(lambda: from_qiskit(QuantumCircuit(0)), "no qubits")
    gp = QuantumCircuit(1)
    gp.global_phase = a * a
    _raises(lambda: from_qiskit(gp), "global_phase", "not affine in a")
    assert len(from_qiskit(gp, global_phase=False).ops) == 0  # a dropped phase is not read
