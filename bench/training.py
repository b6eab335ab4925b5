"""Training benchmark: the demo model per gradient method (seconds per epoch, time to 95% held-out accuracy).

    OPENBLAS_NUM_THREADS=1 python bench/training.py [--epochs 20] [--out bench/results/training.json]
"""
import sys

from qstore.benchmarks import training_cli

if __name__ == '__main__':
    sys.exit(training_cli(sys.argv[1:]))
