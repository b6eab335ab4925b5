"""Gradient benchmark: one MSE-loss gradient over the batch, per method (adjoint, parameter shift, finite differences,
SPSA).

    OPENBLAS_NUM_THREADS=1 python bench/gradients.py [--repeat 10] [--out bench/results/gradients.json]

One gradient of an MSE loss over the whole batch with respect to all weights of the reference model (`<Z_0>`
readout), per method, with the circuits each method executed. The model is built with qstore's own classes; its
circuit is exactly the reference workload.
"""
import argparse
import sys

import numpy as np
from common import SIM_SIZES, report, time_call

from qstore.backends.base import LocalBackend
from qstore.gradients.spsa import SPSAGradientEstimator
from qstore.ml.encoding import DataEncoder
from qstore.ml.layers import HardwareEfficientQuantumLayer, QuantumModel
from qstore.testing import reference_circuit

GRAD_METHODS = ('adjoint', 'parameter_shift', 'finite_diff', 'spsa')
GRAD_COLUMNS = [('n', 'n', '{}'), ('layers', 'L', '{}'), ('batch', 'B', '{}'), ('weights', 'P', '{}'),
                ('method', 'method', '{}'), ('gradient_ms', 'gradient ms (median)', '{:.1f}'),
                ('circuits', 'circuits', '{:,}'),
                ('speedup_vs_parameter_shift', 'adjoint speed-up vs shift', '{:.0f}x')]


def gradient_benchmark(sizes=SIM_SIZES, methods=GRAD_METHODS, repeat: int = 10) -> list[dict]:
    "Time one MSE-loss gradient per method and size; returns rows with ms, circuits and the adjoint speed-up."
    rows = []
    for n, L, B in sizes:
        m = QuantumModel(DataEncoder('angle', n_features=n, rotation='ry'), HardwareEfficientQuantumLayer(n, L), ['Z0'])
        assert [(o.gate, o.qubits) for o in m.circuit] == [(o.gate, o.qubits) for o in reference_circuit(n, L)]
        rng = np.random.default_rng(0)
        X, y = rng.uniform(0, np.pi, (B, n)), rng.uniform(-1, 1, (B, 1))
        w = m.init_weights(seed=0, strategy='uniform')
        def loss(out): return float(((out - y) ** 2).mean()), 2 * (out - y) / out.size
        be, times = LocalBackend(), {}
        for meth in methods:
            g = SPSAGradientEstimator(seed=0) if meth == 'spsa' else meth
            info = m.loss_and_grad(X, w, loss, g, be)[2]
            runs = repeat if meth != 'finite_diff' or n < 12 else 3
            t = time_call(lambda: m.loss_and_grad(X, w, loss, g, be), repeat=runs)
            times[meth] = t['median_s']
            rows.append({'n': n, 'layers': L, 'batch': B, 'weights': m.n_weights, 'method': meth,
                         'gradient_ms': t['median_s'] * 1e3, 'circuits': info['circuits']})
        for r in rows[-len(methods):]:
            if 'adjoint' in times and 'parameter_shift' in times and r['method'] == 'adjoint':
                r['speedup_vs_parameter_shift'] = times['parameter_shift'] / times['adjoint']
    return rows


def main(argv: list[str] | None = None) -> int:
    "Time one loss gradient per method, print a table and write JSON."
    p = argparse.ArgumentParser(prog='bench/gradients.py',
                                description='Benchmark gradient methods on the reference workload.')
    p.add_argument('--repeat', type=int, default=10)
    p.add_argument('--out', default='bench/results/gradients.json')
    a = p.parse_args(argv)
    return report('gradients', gradient_benchmark(repeat=a.repeat), GRAD_COLUMNS, a.out)


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
