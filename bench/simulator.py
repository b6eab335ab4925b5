"""Simulator benchmark: batched forward pass of the reference workload (also `qstore bench` in a source checkout).

    OPENBLAS_NUM_THREADS=1 python bench/simulator.py [--repeat 30] [--out bench/results/simulator.json]

Forward pass of the whole batch (statevector plus readout), for `<Z_0>` and for `<Z_i>` on all qubits, at the sizes
the peers were measured on.
"""
import argparse
import sys

import numpy as np
from common import SIM_SIZES, report, time_call

from qstore.simulator import StatevectorSimulator
from qstore.testing import reference_circuit, reference_values

SIM_COLUMNS = [('n', 'n', '{}'), ('layers', 'L', '{}'), ('batch', 'B', '{}'), ('readout', 'readout', '{}'),
               ('forward_ms', 'forward ms (median)', '{:.2f}'), ('min_ms', 'min ms', '{:.2f}'),
               ('circuits_per_s', 'circuits/s', '{:,.0f}')]


def simulator_benchmark(sizes=SIM_SIZES, repeat: int = 30, dtype=np.complex128) -> list[dict]:
    "Time the batched forward pass for each (n, L, B); returns one row per size and readout."
    sim, rows = StatevectorSimulator(dtype), []
    for n, L, B in sizes:
        c = reference_circuit(n, L)
        v = reference_values(c, B)
        for readout, obs in (('Z0', ['Z0']), ('all Zi', [f'Z{i}' for i in range(n)])):
            t = time_call(lambda: sim.expectation(c, v, obs), repeat=repeat)
            rows.append({'n': n, 'layers': L, 'batch': B, 'readout': readout, 'forward_ms': t['median_s'] * 1e3,
                         'min_ms': t['min_s'] * 1e3, 'circuits_per_s': B / t['median_s']})
    return rows


def main(argv: list[str] | None = None) -> int:
    "Run the simulator benchmark, print a table and write JSON."
    p = argparse.ArgumentParser(prog='bench/simulator.py', description='Benchmark the batched statevector simulator.')
    p.add_argument('--repeat', type=int, default=30, help='timed runs per size (median reported)')
    p.add_argument('--out', default='bench/results/simulator.json', help='where to write the JSON results')
    p.add_argument('--complex64', action='store_true', help='single precision states')
    a = p.parse_args(argv)
    rows = simulator_benchmark(repeat=a.repeat, dtype=np.complex64 if a.complex64 else np.complex128)
    return report('simulator', rows, SIM_COLUMNS, a.out)


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
