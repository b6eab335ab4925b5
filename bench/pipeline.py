"""Circuit pipeline benchmark: native gate counts, circuit preparation time, and one training epoch against IonQ's API.

Three measurements on the hardware-efficient reference model (`qstore.testing.reference_circuit(n, L)`: RY angle
encoding, then L layers of RY+RZ on every qubit and a CNOT ring):

1. Gate counts after compiling to IonQ Aria native gates (GPi, GPi2, MS), for 4 and 8 qubits and 2-4 layers:
   qstore's `IonQNativeGateCompiler` on the parametrised template (what the pipeline sends for every binding) and on
   one bound circuit, cirq-ionq's `cirq.optimize_for_target_gateset(..., AriaNativeGateset())`, and qiskit-ionq's
   `transpile(..., optimization_level=1)` to its native `qpu.aria-1` backend (qiskit < 2.5). The libraries see the
   same bound circuit (row 0 of `reference_values`). Estimated fidelity = f1^(1q gates) * f2^(2q gates) with the
   `aria-1` gate fidelities of the systems table (`qstore.ionq.systems`).
2. Circuit preparation time per circuit, for batches of 20, 200 and 2,000 bindings: for each row, rebuild the
   template, compile it (really: the compiler's own structure cache is bypassed) and serialise it with `to_ionq_json`,
   versus `SmartCircuitCache` (compiled once) + one vectorised bind of the whole `(B, P)` array. Both produce the same
   circuits (checked: every gate equal, every angle to 1e-12).
3. One training epoch on IonQ's API (qstore's emulator on 127.0.0.1, 50 ms injected latency per request, 2 ms
   execution per circuit, 1,000 shots per circuit): a `QuantumTrainer` epoch on a subset of scikit-learn's Iris
   (setosa vs versicolor, the `qstore demo` data set; `--rows` rows, features scaled to [0, pi], 4 qubits, angle
   encoding, one hardware-efficient layer, affine head, batch size 8) with SPSA and with parameter shift, through
   `CircuitBatchManager` with every switch on and with every switch off, plus the plain `IonQBackend`. Reports wall
   time, HTTP requests and jobs (counted by the emulator), and the estimated cost of the same circuits and shots on
   an Aria QPU (IonQ's gate-shot pricing on the gates actually sent).

    OPENBLAS_NUM_THREADS=1 .venv/bin/python bench/pipeline.py [--rows 16] [--prep-models 4x2 8x4] [--skip-epoch]
"""
import argparse, os, time, warnings
os.environ.setdefault('OPENBLAS_NUM_THREADS', '1')
import numpy as np
from qstore.backends.base import get_backend
from qstore.pipeline.batch import CircuitBatchManager
from common import machine_info, print_table, time_call, write_json

from qstore.testing import reference_circuit, reference_values
from qstore.pipeline.cache import SmartCircuitCache, compile_template
from qstore.ionq.compiler import IonQNativeGateCompiler
from qstore.backends.convert import to_cirq, to_qiskit
from qstore.storage.db import Database
from qstore.ml.encoding import DataEncoder
from qstore.ionq.emulator import EmulatorConfig, EmulatorServer
from qstore.ionq.serialize import to_ionq_json
from qstore.ml.layers import HardwareEfficientQuantumLayer, QuantumModel
from qstore.ionq.systems import SYSTEMS
from qstore.ml.trainer import QuantumTrainer, TrainingConfig

KEY = 'bench-key'  # the emulator accepts any key; nothing here talks to IonQ
MODELS = [(4, 2), (4, 3), (4, 4), (8, 2), (8, 3), (8, 4)]
F1, F2, _ = SYSTEMS['aria-1'].fidelities


def fidelity(n1, n2): return F1 ** n1 * F2 ** n2


def cirq_counts(c, row):
    import cirq, cirq_ionq
    out = cirq.optimize_for_target_gateset(to_cirq(c, row), gateset=cirq_ionq.AriaNativeGateset())
    ops = [op for op in out.all_operations() if not isinstance(op.gate, cirq.GlobalPhaseGate)]
    names = {type(op.gate).__name__ for op in ops}
    assert names <= {'GPIGate', 'GPI2Gate', 'MSGate'}, names
    return sum(len(op.qubits) == 1 for op in ops), sum(len(op.qubits) == 2 for op in ops)


def qiskit_counts(backend, c, row):
    from qiskit import transpile
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        out = transpile(to_qiskit(c, row), backend, optimization_level=1)
    ops = out.count_ops()
    assert set(ops) <= {'gpi', 'gpi2', 'ms'}, ops
    return ops.get('gpi', 0) + ops.get('gpi2', 0), ops.get('ms', 0)


def gate_count_table(srv):
    "Rows: per model and compiler, native 1q/2q gate counts and estimated fidelity."
    qk = get_backend('qiskit-ionq.qpu.aria-1', remote_host=srv.url, api_key=KEY).ionq_backend('native')
    rows = []
    for n, L in MODELS:
        c = reference_circuit(n, L)
        row = reference_values(c, 1)[0]
        comp = IonQNativeGateCompiler('aria')
        tpl = comp.compile(c).stats
        bound = comp.compile(reference_circuit_bound(c, row)).stats
        for who, (n1, n2) in (('qstore (template)', (tpl.after_1q, tpl.after_2q)),
                              ('qstore (bound)', (bound.after_1q, bound.after_2q)),
                              ('cirq-ionq', cirq_counts(c, row)), ('qiskit-ionq O1', qiskit_counts(qk, c, row))):
            rows.append({'n': n, 'layers': L, 'source_1q': tpl.before_1q, 'source_2q': tpl.before_2q, 'compiler': who,
                         'native_1q': n1, 'native_2q': n2, 'fidelity': fidelity(n1, n2)})
    return rows


def reference_circuit_bound(c, row):
    "The circuit with every angle a number (row's values), for compilers that see one binding."
    from qstore.circuits import Circuit
    out = Circuit(c.n_qubits, c.name + '/bound')
    A = c.angle_table(row[None])[0]
    for op, (a, b) in zip(c.ops, c.angle_index()[3]): out.append(op.gate, op.qubits, *A[a:b])
    return out


GATE_COLUMNS = [('n', 'n', '{}'), ('layers', 'L', '{}'), ('source_1q', 'source 1q', '{}'),
                ('source_2q', 'source 2q', '{}'),
                ('compiler', 'compiler', '{}'), ('native_1q', 'native 1q', '{}'), ('native_2q', 'native 2q (MS)', '{}'),
                ('fidelity', 'est. fidelity (aria-1)', '{:.3f}')]


def same_circuits(a, b, atol=1e-12) -> bool:
    "Equal gates and qubits, angles equal to atol."
    angle_keys = ('phase', 'phases', 'angle', 'rotation')
    def split(cs):
        keys = [[{k: v for k, v in g.items() if k not in angle_keys} for g in c['circuit']] for c in cs]
        angles = [x for c in cs for g in c['circuit'] for k in angle_keys if k in g for x in np.atleast_1d(g[k])]
        return keys, np.array(angles)
    (ka, na), (kb, nb) = split(a), split(b)
    return ka == kb and na.shape == nb.shape and np.allclose(na, nb, atol=atol, rtol=0)


def prep_table(models, sizes=(20, 200, 2000)):
    """Rows: per model and batch size, seconds per circuit for rebuild+compile+serialise vs cached template + vectorised
    bind."""
    rows = []
    for n, L in models:
        for B in sizes:
            v = reference_values(reference_circuit(n, L), B)
            def rebuild():
                out = []
                for r in v:
                    # a real compile every time
                    e = compile_template(reference_circuit(n, L), 'ionq.simulator', 'aria', fresh=True)
                    out.append(to_ionq_json(e.circuit, e.values(r[None]), 'native'))
                return out
            t0 = time.perf_counter()
            slow = rebuild()
            t_slow = time.perf_counter() - t0
            cache = SmartCircuitCache()
            c = reference_circuit(n, L)
            t0 = time.perf_counter()
            fast = cache.bind(c, v, native='aria')
            t_cold = time.perf_counter() - t0  # includes the one compile
            assert same_circuits(fast, slow)
            warm = time_call(lambda: cache.bind(c, v, native='aria'), repeat=max(3, 2000 // B), warmup=1)['median_s']
            rows.append({'n': n, 'layers': L, 'batch': B, 'rebuild_us': 1e6 * t_slow / B, 'cold_us': 1e6 * t_cold / B,
                         'warm_us': 1e6 * warm / B, 'speedup': t_slow / warm})
            print(f"  prep {n}x{L} B={B}: {rows[-1]['rebuild_us']:.0f} vs {rows[-1]['warm_us']:.1f} us/circuit",
                  flush=True)
    return rows


PREP_COLUMNS = [('n', 'n', '{}'), ('layers', 'L', '{}'), ('batch', 'B', '{:,}'),
                ('rebuild_us', 'rebuild+compile+serialise us/circuit', '{:,.0f}'),
                ('cold_us', 'cache (first call) us/circuit', '{:,.1f}'),
                ('warm_us', 'cache + bind us/circuit', '{:,.1f}'),
                ('speedup', 'speed-up', '{:,.0f}x')]


def iris_subset(rows, seed=0):
    "Seeded class-balanced subset of Iris setosa vs versicolor, features scaled to [0, pi]."
    from sklearn.datasets import load_iris
    d = load_iris()
    keep = d.target < 2
    X, y = d.data[keep], d.target[keep]
    rng = np.random.default_rng(seed)
    idx = np.concatenate([rng.choice(np.flatnonzero(y == k), rows // 2, replace=False) for k in (0, 1)])
    X, y = X[idx], y[idx]
    lo, hi = X.min(0), X.max(0)
    return (X - lo) / (hi - lo) * np.pi, y


ALL_ON = dict(use_batch_api=True, use_native_gates=True, enable_smart_caching=True, adaptive_batch_sizing=True)
ALL_OFF = dict(use_batch_api=False, use_native_gates=False, enable_smart_caching=False, adaptive_batch_sizing=False)


def epoch_table(srv, rows, tmp):
    "Rows: per gradient method and pipeline setting, one training epoch's wall time, requests, jobs and cost."
    X, y = iris_subset(rows)
    out = []
    for method, opt in (('spsa', 'spsa'), ('parameter_shift', 'sgd')):
        for setting in ('IonQBackend alone', 'manager: all on', 'manager: all off'):
            model = QuantumModel(DataEncoder('angle', n_features=4), HardwareEfficientQuantumLayer(4, 1), ['Z0'],
                                 head='affine')
            cfg = TrainingConfig(epochs=1, batch_size=8, optimizer=opt, gradient_method=method, learning_rate=0.2,
                                 loss='cross_entropy',
                                 shots_per_circuit=1000, progress=False, seed=1)
            opts = dict(base_url=srv.base_url, api_key=KEY, seed=1)
            be = (get_backend('ionq.simulator', **opts) if setting == 'IonQBackend alone'
                  else CircuitBatchManager('ionq.simulator', **(ALL_ON if setting.endswith('on') else ALL_OFF), **opts))
            srv.reset_stats()
            t0 = time.perf_counter()
            tr = QuantumTrainer(model, cfg, backend=be, db=Database.open(os.path.join(tmp, f"{method}-{len(out)}")))
            hist = tr.fit((X, y))
            wall = time.perf_counter() - t0
            s = srv.stats()
            rep = be.report() if isinstance(be, CircuitBatchManager) else None
            out.append({'gradient': method, 'setting': setting, 'wall_s': wall, 'requests': sum(s['requests'].values()),
                        'jobs': s['jobs_created'], 'circuits': s['circuits_submitted'],
                        'train_loss': hist[-1]['train_loss'],
                        'qpu_usd': rep.qpu_equivalent_usd if rep else None,
                        'decisions': rep.queue_decisions[:6] if rep else None,
                        'report': str(rep) if rep else None})
            print(f"  epoch {method} / {setting}: {wall:.1f} s, {out[-1]['requests']} requests", flush=True)
            be.close()
    return out


EPOCH_COLUMNS = [('gradient', 'gradient', '{}'), ('setting', 'pipeline', '{}'), ('wall_s', 'wall s', '{:.1f}'),
                 ('requests', 'requests', '{:,}'), ('jobs', 'jobs', '{:,}'), ('circuits', 'circuits', '{:,}'),
                 ('train_loss', 'train loss', '{:.3f}'), ('qpu_usd', 'est. cost on Aria (USD)', '{:,.0f}')]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--rows', type=int, default=16, help='Iris rows in the training epoch (class-balanced)')
    p.add_argument('--prep-models', nargs='+', default=['4x2', '8x4'],
                   help='models (NxL) for the preparation-time table')
    p.add_argument('--skip-epoch', action='store_true', help='skip the training-epoch benchmark')
    p.add_argument('--out', default='bench/results/pipeline.json')
    a = p.parse_args(argv)
    import tempfile
    payload = {'benchmark': 'pipeline', 'machine': machine_info()}
    with EmulatorServer(EmulatorConfig()) as srv, tempfile.TemporaryDirectory() as tmp:
        print("== native gate counts (Aria: GPi, GPi2, MS)")
        payload['gate_counts'] = gate_count_table(srv)
        print_table(payload['gate_counts'], GATE_COLUMNS)
        print("\n== circuit preparation time per circuit")
        payload['preparation'] = prep_table([tuple(map(int, m.split('x'))) for m in a.prep_models])
        print_table(payload['preparation'], PREP_COLUMNS)
        if not a.skip_epoch:
            srv.config.latency, srv.config.execution_time = 0.05, 0.002
            print("\n== one training epoch on the IonQ emulator (50 ms latency per request, 2 ms per circuit;"
                  f" Iris, {a.rows} rows, 4 qubits)")
            payload['epoch'] = epoch_table(srv, a.rows, tmp)
            print_table(payload['epoch'], EPOCH_COLUMNS)
            for r in payload['epoch']:
                if r['report']: print(f"\n-- {r['gradient']} / {r['setting']}\n{r['report']}")
    write_json(a.out, payload)
    print(f"\nwrote {a.out}")


if __name__ == '__main__':
    main()
