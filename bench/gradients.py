"""Gradient benchmark: one MSE-loss gradient over the batch, per method (adjoint, parameter shift, finite differences, SPSA).

    OPENBLAS_NUM_THREADS=1 python bench/gradients.py [--repeat 10] [--out bench/results/gradients.json]
"""
import sys

from qstore.benchmarks import gradients_cli

if __name__ == '__main__':
    sys.exit(gradients_cli(sys.argv[1:]))
