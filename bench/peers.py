"""Peer benchmark: qstore against PennyLane (default.qubit + JAX jit, lightning adjoint), Qiskit Aer and qsim.

    OPENBLAS_NUM_THREADS=1 python bench/peers.py [--skip-large | --skip-core] [--repeat 10] [--out ...json]

The workload is the reference circuit (`qstore.testing.reference_circuit`: RY encoding, L x (RY, RZ, CNOT ring)) with
an MSE loss over the batch, read out as `<Z0>` or as every `<Zi>`. Each peer runs in this process, right after qstore
at the same size, and every qstore number is cross-checked against the peers' values and gradients in the same run
(`max_err` columns; the run fails if qstore disagrees with a reference by more than 1e-8). Ratios are
fastest peer / qstore (above 1: qstore is faster). JAX's compile (its first call) is reported, not counted.

Also measured: the adjoint gradient against parameter shift (qstore's, PennyLane's and Aer's), the larger circuits
(16-20 qubits, where qsim's complex64 forward pass joins; `--skip-large` skips them) with GB/s achieved against a
measured copy bandwidth, the memory ceiling (peak bytes per state measured at 16-22 qubits, extrapolated to 24 GiB),
a cold-start time, and time against n (`bench/results/peers_scaling.png`). All peers run in this one process.

Needs `pip install 'qstore[bench]'`.
"""
import argparse
import json
import math
import os
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
from common import SIM_SIZES, pennylane_reference, print_table, qiskit_reference, time_call, write_json

from qstore.backends.base import LocalBackend
from qstore.gradients.shift import parameter_shift
from qstore.kernels import CHAIN
from qstore.ml.encoding import DataEncoder
from qstore.ml.layers import HardwareEfficientQuantumLayer, QuantumModel
from qstore.simulator import StatevectorSimulator, plan_for
from qstore.testing import reference_circuit, reference_values

LARGE_SIZES = ((16, 4, 8), (20, 2, 1), (20, 2, 8))
TOL = 1e-8  # qstore against a double-precision reference
PEERS = ('jax', 'lightning', 'aer', 'qsim')
QSIM_TOL = 1e-5  # qsim simulates in complex64


def workload(n, L, B, readout):
    "Circuit, (B, P) values, inputs (B, n), shared weights, observables and MSE targets of one benchmark size."
    c = reference_circuit(n, L)
    v = reference_values(c, B)
    obs = [0] if readout == 'Z0' else list(range(n))
    y = np.random.default_rng(1).uniform(-1, 1, (B, len(obs)))
    return c, v, v[:, c.group_indices('inputs')], v[0, c.group_indices('weights')], obs, y


def mse_cotangent(y):
    "The MSE loss's derivative with respect to the expectations, as a function of them."
    return lambda E: 2 * (E - y) / E.size


# ----- qstore -----

def qstore_forward(c, v, obs, dtype=np.complex128):
    sim = StatevectorSimulator(dtype)
    names = [f'Z{i}' for i in obs]
    return lambda: sim.expectation(c, v, names)


def qstore_gradient(c, L, v, obs, y):
    """The MSE loss gradient over the shared weights through the trainer's path, `QuantumModel.loss_and_grad` with
    the adjoint method, on a model whose circuit is the reference circuit."""
    n = c.n_qubits
    m = QuantumModel(DataEncoder('angle', n_features=n, rotation='ry'), HardwareEfficientQuantumLayer(n, L),
                     [f'Z{i}' for i in obs])
    x, w = v[:, c.group_indices('inputs')], v[0, c.group_indices('weights')]
    if not np.array_equal(m.values(x, w), v): raise AssertionError("the model's circuit is not the reference circuit")
    be = LocalBackend()
    def mse(out): return float(((out - y) ** 2).mean()), 2 * (out - y) / out.size
    return lambda: m.loss_and_grad(x, w, mse, 'adjoint', be)[1]


def qstore_shift(c, v, obs, y):
    names = [f'Z{i}' for i in obs]
    def grad():
        r = parameter_shift(c, v, names, 'local', 'weights')
        return np.einsum('bk,bkp->p', mse_cotangent(y)(r.value), r.jacobian)
    return grad


# ----- PennyLane -----

def _pl_layers(qml, n, L, x, w, obs):
    "The reference circuit in PennyLane (wire i = qstore qubit i; `x` broadcast over rows), read out on `obs`."
    pennylane_reference(qml, x, w, n, L)
    return [qml.expval(qml.PauliZ(i)) for i in obs]


def pennylane_jax(n, L, x, w, obs, y):
    "(forward, gradient, compile seconds) with default.qubit + jax.jit; float64."
    import jax
    jax.config.update('jax_enable_x64', True)
    import jax.numpy as jnp
    import pennylane as qml
    dev = qml.device('default.qubit', wires=n)
    qn = qml.QNode(lambda x, w: _pl_layers(qml, n, L, x, w, obs), dev, interface='jax')
    def out(x, w): return jnp.stack(qn(x, w), -1)
    fwd = jax.jit(out)
    grad = jax.jit(jax.grad(lambda w, x, y: jnp.mean((out(x, w) - y) ** 2)))
    xj, wj, yj = jnp.asarray(x), jnp.asarray(w), jnp.asarray(y)
    t = time.perf_counter()
    fwd(xj, wj).block_until_ready()
    grad(wj, xj, yj).block_until_ready()
    compile_s = time.perf_counter() - t
    return (lambda: np.asarray(fwd(xj, wj).block_until_ready()),
            lambda: np.asarray(grad(wj, xj, yj).block_until_ready()), compile_s)


def pennylane_autograd(device, diff_method, n, L, x, w, obs, y):
    "(forward, gradient) with a PennyLane device and differentiation method through autograd."
    import pennylane as qml
    from pennylane import numpy as pnp
    dev = qml.device(device, wires=n)
    qn = qml.QNode(lambda x, w: _pl_layers(qml, n, L, x, w, obs), dev, interface='autograd', diff_method=diff_method)
    xp, wp = pnp.array(x, requires_grad=False), pnp.array(w, requires_grad=True)
    def out(w): return pnp.stack(qn(xp, w), -1)
    g = qml.grad(lambda w: pnp.mean((out(w) - y) ** 2))
    return lambda: np.asarray(out(wp)), lambda: np.asarray(g(wp))


# ----- Qiskit Aer -----

def aer_estimator(n, L, x, w, obs, y):
    "(forward, parameter-shift gradient) with Aer's exact statevector EstimatorV2, one job per call."
    from qiskit_aer.primitives import EstimatorV2
    qc, px, pw = qiskit_reference(n, L)
    ops = np.array([''.join('Z' if q == i else 'I' for q in reversed(range(n))) for i in obs])  # qubit 0 rightmost
    est = EstimatorV2(options={'backend_options': {'method': 'statevector'}})
    order = list(qc.parameters)  # qiskit sorts parameters by name: bind by that order
    def run(rows):  # rows: (R, 2nL) weight rows, each with every input row -> (R, B, n_obs)
        full = {**{px[i]: np.broadcast_to(x[:, i], (len(rows), len(x))) for i in range(n)},
                **{pw[j]: np.broadcast_to(rows[:, j, None], (len(rows), len(x))) for j in range(len(w))}}
        vals = np.stack([full[p] for p in order], -1)
        ev = est.run([(qc, ops[:, None, None], vals[None])]).result()[0].data.evs  # (n_obs, R, B)
        return np.moveaxis(ev, 0, -1)
    def grad():
        shifts = np.concatenate([w[None], w + np.pi / 2 * np.eye(len(w)), w - np.pi / 2 * np.eye(len(w))])
        ev = run(shifts)
        jac = (ev[1:1 + len(w)] - ev[1 + len(w):]) / 2  # (P, B, n_obs)
        return np.einsum('bk,pbk->p', mse_cotangent(y)(ev[0]), jac)
    return lambda: run(w[None])[0], grad


# ----- qsim -----

def qsim_forward(c, v, obs):
    "qsim's forward pass (complex64, its default options): every row's <Z_k> by `simulate_expectation_values_sweep`."
    import cirq
    import qsimcirq
    from qstore.backends.convert import to_cirq
    circuit, sim = to_cirq(c), qsimcirq.QSimSimulator()
    qubits = cirq.LineQubit.range(c.n_qubits)
    observables = [cirq.Z(qubits[k]) for k in obs]
    resolvers = [cirq.ParamResolver(dict(zip(c.parameters, row))) for row in v]
    return lambda: np.real(sim.simulate_expectation_values_sweep(circuit, observables, resolvers))


# ----- the comparison -----

def qstore_worker(repeat: int):
    "Time qstore's forward pass and loss gradient at the core sizes; print times and values as JSON (a child process)."
    out = []
    for n, L, B in SIM_SIZES:
        for readout in ('Z0', 'all Zi'):
            c, v, _, _, obs, y = workload(n, L, B, readout)
            f, fwd_s = _timed(qstore_forward(c, v, obs), repeat)
            g, grad_s = _timed(qstore_gradient(c, L, v, obs, y), repeat)
            out.append({'n': n, 'readout': readout, 'fwd_s': fwd_s, 'grad_s': grad_s, 'fwd': f.tolist(),
                        'grad': g.tolist()})
    print(json.dumps(out))


def baseline_times(path: str, repeat: int) -> dict:
    "The core sizes timed by the qstore at `path` (e.g. an older commit's tree) in a child process of this run."
    env = {**os.environ, 'PYTHONPATH': str(path)}
    r = subprocess.run([sys.executable, __file__, '--qstore-worker', '--repeat', str(repeat)], env=env,
                       capture_output=True, text=True, check=True)
    return {(x['n'], x['readout']): x for x in json.loads(r.stdout.strip().splitlines()[-1])}


def _err(a, b):
    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.shape != b.shape: raise AssertionError(f"shapes differ: {a.shape} and {b.shape}")
    return float(np.max(np.abs(a - b)))


def _timed(fn, repeat, min_time=0.2):
    value = fn()
    return value, time_call(fn, repeat=repeat, warmup=1, min_time=min_time)['median_s']


def compare_size(n, L, B, readout, repeat=10, jax_peer=True, shift=False, baseline=None) -> dict:
    """Time qstore and each peer on one size and readout; cross-check qstore's values and gradient against each.
    `baseline`: the same size timed by another qstore tree (`baseline_times`), reported as `before_*` columns."""
    c, v, x, w, obs, y = workload(n, L, B, readout)
    row = {'n': n, 'layers': L, 'batch': B, 'readout': readout}
    if baseline is not None: row['before_fwd_s'], row['before_grad_s'] = baseline['fwd_s'], baseline['grad_s']
    qf, row['qstore_fwd_s'] = _timed(qstore_forward(c, v, obs), repeat)
    qg, row['qstore_grad_s'] = _timed(qstore_gradient(c, L, v, obs, y), repeat)
    if n >= 16:
        _, row['qstore_fwd_c64_s'] = _timed(qstore_forward(c, v, obs, np.complex64), repeat)
        qsf, row['qsim_fwd_s'] = _timed(qsim_forward(c, v, obs), repeat)
        if _err(qf, qsf) > QSIM_TOL: raise AssertionError(f"qstore disagrees with qsim at n={n}")
    peers = {'lightning': pennylane_autograd('lightning.qubit', 'adjoint', n, L, x, w, obs, y)}
    if jax_peer:
        f, g, row['jax_compile_s'] = pennylane_jax(n, L, x, w, obs, y)
        peers['jax'] = (f, g)
    peers['aer'] = aer_estimator(n, L, x, w, obs, y)
    errs = []
    for name, (f, g) in peers.items():
        pf, row[f'{name}_fwd_s'] = _timed(f, repeat)
        errs.append(_err(qf, pf))
        if name != 'aer':  # Aer's gradient is parameter shift, timed below with the other shift rules
            pg, row[f'{name}_grad_s'] = _timed(g, max(3, repeat // 3))
            errs.append(_err(qg, pg))
    if baseline is not None: errs += [_err(qf, baseline['fwd']), _err(qg, baseline['grad'])]
    row['max_err'] = max(errs)
    for kind in ('fwd', 'grad'):
        best = min((k for k in row if k.endswith(f'_{kind}_s') and k.split('_')[0] in PEERS), key=row.get)
        row[f'{kind}_fastest_peer'] = best.split('_')[0]
        row[f'{kind}_ratio'] = row[best] / row[f'qstore_{kind}_s']
        if baseline is not None: row[f'before_{kind}_ratio'] = row[best] / row[f'before_{kind}_s']
    if shift:
        sg, row['qstore_shift_s'] = _timed(qstore_shift(c, v, obs, y), 3)
        pg, row['pennylane_shift_s'] = _timed(pennylane_autograd('default.qubit', 'parameter-shift', n, L, x, w,
                                                                 obs, y)[1], 1, 0)
        ag, row['aer_shift_s'] = _timed(peers['aer'][1], 1, 0)
        row['max_err'] = max(row['max_err'], _err(sg, qg), _err(pg, qg), _err(ag, qg))
        row['shift_ratio_pennylane'] = row['pennylane_shift_s'] / row['qstore_shift_s']
        row['shift_ratio_aer'] = row['aer_shift_s'] / row['qstore_shift_s']
    return row


def copy_bandwidth(gib: float = 0.5) -> float:
    "Measured memory bandwidth (GB/s): a numpy copy of `gib` GiB, counting the bytes read and written."
    src = np.ones(int(gib * 2 ** 30) // 8)
    dst = np.empty_like(src)
    t = time_call(lambda: np.copyto(dst, src), repeat=5, warmup=1)['min_s']
    return 2 * src.nbytes / t / 1e9


def forward_traffic(c, B, dtype) -> int:
    """Bytes a forward pass must move at least: every pass over a state reads and writes it once. On the compiled
    kernels a pass is a row of the forward table (a chain of one-qubit gates counts once), on the numpy plan a step."""
    program = StatevectorSimulator(dtype).program(c)
    if program is None: passes = len(plan_for(c).steps)
    else:
        table, passes, k = program.chained, 0, 0
        while k < len(table):
            passes += 1
            k += 1 + (table[k, 3] if table[k, 0] == CHAIN else 0)
    return 2 * passes * B * np.dtype(dtype).itemsize * 2 ** c.n_qubits


def memory_ceiling(ns=(16, 18, 20, 22), budget_gib: float = 24.0) -> dict:
    """Peak numpy bytes of a one-row forward pass (tracemalloc) per state byte, measured at `ns`; extrapolated to the
    largest n whose peak fits in `budget_gib` (nothing that large is allocated here)."""
    ratios = {}
    for dtype in (np.complex128, np.complex64):
        per = []
        for n in ns:
            c = reference_circuit(n, 1)
            v = reference_values(c, 1)
            sim = StatevectorSimulator(dtype)
            tracemalloc.start()
            sim.expectation(c, v, ['Z0'])
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            per.append(peak / (np.dtype(dtype).itemsize * 2 ** n))
        ratios[np.dtype(dtype).name] = per
    out = {'measured_n': list(ns), 'peak_per_state_byte': ratios, 'budget_gib': budget_gib}
    for name, per in ratios.items():
        r, item = max(per), np.dtype(name).itemsize
        out[f'max_n_{name}'] = int(math.floor(math.log2(budget_gib * 2 ** 30 / (r * item))))
    return out


def cold_start() -> float:
    "Seconds for a fresh Python process to import qstore and compute one adjoint gradient at (8, 4, 32)."
    code = ("import time; t = time.perf_counter(); import numpy as np; from qstore.gradients.adjoint import adjoint; "
            "from qstore.testing import reference_circuit, reference_values; c = reference_circuit(8, 4); "
            "adjoint(c, reference_values(c, 32), ['Z0']); print(time.perf_counter() - t)")
    ts = [float(subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True).stdout)
          for _ in range(3)]
    return min(ts)


def scaling(ns, L=2, B=1, repeat=3) -> list[dict]:
    "Forward time of one row against n for qstore and each peer (JAX up to 14 qubits: its compile grows fast)."
    rows = []
    for n in ns:
        c, v, x, w, obs, y = workload(n, L, B, 'Z0')
        row = {'n': n}
        qf, row['qstore'] = _timed(qstore_forward(c, v, obs), repeat, 0)
        _, row['qstore_c64'] = _timed(qstore_forward(c, v, obs, np.complex64), repeat, 0)
        peers = {'lightning': pennylane_autograd('lightning.qubit', 'adjoint', n, L, x, w, obs, y)[0],
                 'aer': aer_estimator(n, L, x, w, obs, y)[0]}
        if n <= 14: peers['jax'] = pennylane_jax(n, L, x, w, obs, y)[0]
        peers['qsim'] = qsim_forward(c, v, obs)
        for name, f in peers.items():
            pf, row[name] = _timed(f, repeat, 0)
            if _err(qf, pf) > (QSIM_TOL if name == 'qsim' else TOL):
                raise AssertionError(f"qstore disagrees with {name} at n={n}")
        rows.append(row)
    return rows


def plot_scaling(rows, path):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    for name in ('qstore', 'qstore_c64', 'jax', 'lightning', 'aer', 'qsim'):
        pts = [(r['n'], r[name]) for r in rows if name in r]
        ax.plot(*zip(*pts), marker='o', label=name.replace('_c64', ' complex64'))
    ax.set(yscale='log', xlabel='qubits n', ylabel='forward seconds (one row, L=2)', title='Forward pass against n')
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


RATIO_COLUMNS = [('n', 'n', '{}'), ('layers', 'L', '{}'), ('batch', 'B', '{}'), ('readout', 'readout', '{}'),
                 ('qstore_fwd_s', 'qstore fwd s', '{:.2e}'), ('fwd_fastest_peer', 'fastest', '{}'),
                 ('fwd_ratio', 'fwd ratio', '{:.2f}'), ('qstore_grad_s', 'qstore grad s', '{:.2e}'),
                 ('grad_fastest_peer', 'fastest', '{}'), ('grad_ratio', 'grad ratio', '{:.2f}'),
                 ('before_fwd_ratio', 'fwd before', '{:.2f}'), ('before_grad_ratio', 'grad before', '{:.2f}'),
                 ('jax_compile_s', 'JAX compile s', '{:.1f}'), ('max_err', 'max err', '{:.0e}')]
SHIFT_COLUMNS = [('n', 'n', '{}'), ('layers', 'L', '{}'), ('batch', 'B', '{}'),
                 ('qstore_grad_s', 'adjoint s', '{:.2e}'),
                 ('qstore_shift_s', 'qstore shift s', '{:.2e}'), ('pennylane_shift_s', 'PennyLane shift s', '{:.2e}'),
                 ('aer_shift_s', 'Aer shift s', '{:.2e}'), ('shift_ratio_pennylane', 'PL/qstore', '{:.1f}'),
                 ('shift_ratio_aer', 'Aer/qstore', '{:.1f}')]
LARGE_COLUMNS = [('n', 'n', '{}'), ('layers', 'L', '{}'), ('batch', 'B', '{}'),
                 ('qstore_fwd_s', 'qstore fwd', '{:.3f}'),
                 ('qstore_fwd_c64_s', 'qstore c64 fwd', '{:.3f}'), ('qstore_grad_s', 'qstore grad', '{:.3f}'),
                 ('lightning_fwd_s', 'lightning fwd', '{:.3f}'), ('lightning_grad_s', 'lightning grad', '{:.3f}'),
                 ('aer_fwd_s', 'Aer fwd', '{:.3f}'), ('qsim_fwd_s', 'qsim c64 fwd', '{:.3f}'),
                 ('fwd_ratio', 'fwd ratio', '{:.2f}'),
                 ('fwd_ratio_c64', 'c64 fwd ratio', '{:.2f}'), ('grad_ratio', 'grad ratio', '{:.2f}'),
                 ('gbps', 'GB/s', '{:.1f}'), ('gbps_c64', 'GB/s c64', '{:.1f}'), ('max_err', 'max err', '{:.0e}')]


def main(argv: list[str] | None = None) -> int:
    "Run every comparison, print the tables, write JSON and the scaling plot."
    p = argparse.ArgumentParser(prog='bench/peers.py', description='qstore against PennyLane, JAX and Qiskit Aer.')
    p.add_argument('--repeat', type=int, default=10, help='timed runs per measurement (median reported)')
    p.add_argument('--skip-large', action='store_true', help='skip the 16-20 qubit sizes and the memory ceiling')
    p.add_argument('--skip-core', action='store_true', help='run only the large sizes, memory ceiling and scaling')
    p.add_argument('--baseline', metavar='TREE', help="also time the qstore at TREE (e.g. `git archive` of an older "
                   "commit) at the core sizes, in a child process: the 'before' columns")
    p.add_argument('--qstore-worker', action='store_true', help=argparse.SUPPRESS)
    p.add_argument('--out', default='bench/results/peers.json')
    a = p.parse_args(argv)
    if a.qstore_worker: return qstore_worker(a.repeat) or 0
    t0 = time.perf_counter()
    load = os.getloadavg()
    before = baseline_times(a.baseline, a.repeat) if a.baseline and not a.skip_core else {}
    rows = [] if a.skip_core else [compare_size(n, L, B, ro, a.repeat, shift=ro == 'Z0' and n >= 8,
                                                baseline=before.get((n, ro)))
                                   for n, L, B in SIM_SIZES for ro in ('Z0', 'all Zi')]
    if rows:
        print_table(rows, RATIO_COLUMNS)
        print()
        print_table([r for r in rows if 'qstore_shift_s' in r], SHIFT_COLUMNS)
    large, extra = [], {}
    if not a.skip_large:
        bw = copy_bandwidth()
        for n, L, B in LARGE_SIZES:
            r = compare_size(n, L, B, 'Z0', 2, jax_peer=False)
            c = reference_circuit(n, L)
            r['gbps'] = forward_traffic(c, B, np.complex128) / r['qstore_fwd_s'] / 1e9
            r['gbps_c64'] = forward_traffic(c, B, np.complex64) / r['qstore_fwd_c64_s'] / 1e9
            best = min(r['lightning_fwd_s'], r['aer_fwd_s'], r['qsim_fwd_s'])
            r['fwd_ratio_c64'] = best / r['qstore_fwd_c64_s']
            large.append(r)
        print()
        print_table(large, LARGE_COLUMNS)
        extra = {'copy_bandwidth_gbps': bw, 'memory_ceiling': memory_ceiling()}
        print(f"\nmeasured copy bandwidth {bw:.1f} GB/s; memory ceiling {extra['memory_ceiling']}")
    scale = scaling(range(4, 21 if not a.skip_large else 15, 2))
    plot = Path(a.out).with_name(Path(a.out).stem + '_scaling.png')
    plot_scaling(scale, plot)
    cold = cold_start()
    print(f"cold start (import + first gradient at (8, 4, 32)): {cold:.2f} s; plot {plot}")
    worst = max((r['max_err'] for r in rows + large), default=0.0)
    write_json(a.out, {'benchmark': 'peers', 'machine': {**__import__('common').machine_info(), 'loadavg': load,
                                                         'loadavg_end': os.getloadavg()},
                       'baseline': a.baseline, 'rows': rows, 'large': large, 'scaling': scale, 'cold_start_s': cold,
                       'seconds': time.perf_counter() - t0, **extra})
    print(f"wrote {a.out}; worst disagreement with a reference {worst:.1e}")
    return 0 if worst <= TOL else 1


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
