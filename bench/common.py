"""What the `bench/*.py` scripts share: timing, the machine description, tables and JSON results.

The reference workload is `qstore.testing.reference_circuit` / `reference_values` (the tests use it too).
"""
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np

SIM_SIZES = ((4, 2, 16), (8, 4, 32), (12, 4, 32))  # (qubits, layers, batch) of the reference workload


def time_call(fn, repeat: int = 30, warmup: int = 3, min_time: float = 0.0) -> dict:
    "Median/min/mean seconds of `fn()` over at least `repeat` runs (and `min_time` seconds) after `warmup` runs."
    for _ in range(warmup):
        fn()
    ts, t_start = [], time.perf_counter()
    while len(ts) < repeat or time.perf_counter() - t_start < min_time:
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return {'median_s': statistics.median(ts), 'min_s': min(ts), 'mean_s': statistics.fmean(ts), 'runs': len(ts)}


def machine_info() -> dict:
    "Where a benchmark ran: CPU count, Python, numpy, thread settings."
    return {'python': platform.python_version(), 'numpy': np.__version__, 'cpus': os.cpu_count(),
            'machine': platform.machine(), 'OPENBLAS_NUM_THREADS': os.environ.get('OPENBLAS_NUM_THREADS')}


def print_table(rows: list[dict], columns: list[tuple]):
    "Print `rows` as an aligned table; `columns` is a list of (key, header, format)."
    def fmt(r, k, f): return f.format(r[k]) if r.get(k) is not None else '-'
    cells = [[h for _, h, _ in columns]] + [[fmt(r, k, f) for k, _, f in columns] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    for j, row in enumerate(cells):
        print('  '.join(s.rjust(w) for s, w in zip(row, widths)))
        if j == 0: print('  '.join('-' * w for w in widths))


def write_json(path, payload: dict):
    "Write benchmark results atomically (temp file + rename)."
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + '.tmp')
    tmp.write_text(json.dumps(payload, indent=2))
    os.replace(tmp, path)


def report(name: str, rows: list[dict], columns: list[tuple], out) -> int:
    "Print `rows` as a table and write them with the machine description to `out` as JSON."
    print_table(rows, columns)
    write_json(out, {'benchmark': name, 'machine': machine_info(), 'rows': rows})
    print(f"\nwrote {out}")
    return 0


# ----- qstore's reference circuit (`qstore.testing.reference_circuit`) written in the peer libraries -----

def ring(n: int) -> list:
    "The CNOT pairs of the reference circuit's entangler: (i, i + 1 mod n) for every qubit."
    return [(i, (i + 1) % n) for i in range(n)]


def pennylane_reference(qml, x, w, n: int, L: int, pairs=None):
    "The reference circuit as PennyLane operations: RY(x) encoding, then L x (RY, RZ on every qubit, CNOTs); `w` flat."
    for i in range(n): qml.RY(x[..., i], wires=i)
    for layer in range(L):
        for i in range(n):
            k = 2 * (layer * n + i)
            qml.RY(w[k], wires=i)
            qml.RZ(w[k + 1], wires=i)
        for a, b in ring(n) if pairs is None else pairs: qml.CNOT(wires=[a, b])


def qiskit_reference(n: int, L: int, pairs=None) -> tuple:
    "(QuantumCircuit, input parameters, weight parameters): the reference circuit in Qiskit (qubit i = qstore qubit i)."
    from qiskit.circuit import ParameterVector, QuantumCircuit
    x, w = ParameterVector('x', n), ParameterVector('w', 2 * n * L)
    qc = QuantumCircuit(n)
    for i in range(n): qc.ry(x[i], i)
    for layer in range(L):
        for i in range(n):
            k = 2 * (layer * n + i)
            qc.ry(w[k], i)
            qc.rz(w[k + 1], i)
        for a, b in ring(n) if pairs is None else pairs: qc.cx(a, b)
    return qc, x, w
