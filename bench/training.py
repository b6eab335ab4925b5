"""Training benchmark: the demo model per gradient method (seconds per epoch, time to 95% held-out accuracy).

    OPENBLAS_NUM_THREADS=1 python bench/training.py [--epochs 20] [--out bench/results/training.json]

The `qstore demo` model (Iris setosa vs versicolor, 4 qubits) trained with each gradient method on the local
simulator: seconds per epoch, and the wall time and epoch at which held-out accuracy first reaches 95%.
"""
import argparse
import sys
import tempfile
import time

from common import report

from qstore.jobs import DEMO_MODEL
from qstore.ml.datasets import build_model, load_data, minmax_to_angles
from qstore.ml.trainer import QuantumTrainer, TrainingConfig
from qstore.storage.db import Database, train_val_split

TRAIN_SETUPS = (('adjoint', dict(optimizer='adam', gradient_method='adjoint')),
                ('parameter_shift', dict(optimizer='adam', gradient_method='parameter_shift')),
                ('finite_diff', dict(optimizer='adam', gradient_method='finite_diff')),
                ('spsa', dict(optimizer='spsa', gradient_method='spsa', learning_rate=4.0)),
                ('adaptive', dict(optimizer='adam', gradient_method='adaptive')))
TRAIN_COLUMNS = [('method', 'gradient', '{}'), ('seconds_per_epoch', 's/epoch', '{:.3f}'),
                 ('circuits_per_epoch', 'circuits/epoch', '{:,.0f}'), ('epochs_to_95', 'epochs to 95%', '{}'),
                 ('seconds_to_95', 's to 95%', '{:.2f}'), ('final_val_accuracy', 'final val acc', '{:.3f}')]


def training_benchmark(epochs: int = 20, setups=TRAIN_SETUPS, home=None) -> list[dict]:
    "Seconds per epoch and time to 95% held-out accuracy of the demo model, per gradient method."
    X, y, _ = load_data('iris')
    tr, te = train_val_split(y, 0.3, 0, stratify=True)
    Xtr, Xte = minmax_to_angles(X[tr], X[te])
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, opts in setups:
            reached = {}
            def watch(trainer, event, logs, t0=time.perf_counter(), reached=reached):
                if event == 'epoch' and 'epoch' not in reached and (logs.get('val_accuracy') or 0) >= 0.95:
                    reached.update(epoch=logs['epoch'], seconds=time.perf_counter() - t0)
            cfg = TrainingConfig(**{'epochs': epochs, 'batch_size': 10, 'learning_rate': 0.1, 'loss': 'cross_entropy',
                                    'seed': 0, 'progress': False, 'checkpoint_dir': f"{tmp}/{name}", **opts})
            db = Database.open(home or f"{tmp}/db")
            t = QuantumTrainer(build_model(DEMO_MODEL, 4), cfg, db=db, callbacks=[watch])
            t0 = time.perf_counter()
            hist = t.fit((Xtr, y[tr]), val=(Xte, y[te]))
            wall = time.perf_counter() - t0
            circuits = sum(t.db.metrics.history(t.run, kind='step')['circuits'])
            rows.append({'method': name, 'seconds_per_epoch': wall / len(hist), 'epochs_to_95': reached.get('epoch'),
                         'seconds_to_95': reached.get('seconds'), 'final_val_accuracy': hist[-1]['val_accuracy'],
                         'circuits_per_epoch': circuits / len(hist)})
    return rows


def main(argv: list[str] | None = None) -> int:
    "Train the demo model per gradient method, print a table and write JSON."
    p = argparse.ArgumentParser(prog='bench/training.py',
                                description='Seconds per epoch and time to 95% accuracy per gradient method.')
    p.add_argument('--epochs', type=int, default=20)
    p.add_argument('--out', default='bench/results/training.json')
    a = p.parse_args(argv)
    return report('training', training_benchmark(a.epochs), TRAIN_COLUMNS, a.out)


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
