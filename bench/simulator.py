"""Simulator benchmark: batched forward pass of the reference workload (also `qstore bench`).

    OPENBLAS_NUM_THREADS=1 python bench/simulator.py [--repeat 30] [--out bench/results/simulator.json]
"""
import sys

from qstore.benchmarks import bench_cli

if __name__ == '__main__':
    sys.exit(bench_cli(sys.argv[1:]))
