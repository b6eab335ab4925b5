"""Time to accuracy: the same 4-qubit classifier trained in qstore and in PennyLane + JAX jit + optax.

    OPENBLAS_NUM_THREADS=1 python bench/train_peers.py [--epochs 30] [--out bench/results/train_peers.json]

Breast cancer (scikit-learn), standardised, PCA to 4 features scaled to [0, pi] on the training split; RY angle
encoding, 2 hardware-efficient layers, output `a <Z0> + b`, MSE against labels +-1, Adam 0.05, batch 32, the same
initial weights and the same batch order. Each framework trains in a fresh process, so its wall time includes its
imports and (for JAX) its compile; the parent checks that both trajectories agree and reports the time to 95% of the
final held-out accuracy, the time for all epochs, and seconds per epoch after the first (the steady state).
The plot (held-out accuracy against wall time) goes next to the JSON. Needs `pip install 'qstore[bench]'`.
"""
import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

T_LAUNCH = time.time()  # a worker's clock starts before its imports

import numpy as np  # noqa: E402

N_QUBITS, LAYERS, LR, BATCH = 4, 2, 0.05, 32


def dataset(seed: int = 0):
    "(train X, train y, test X, test y): PCA-4 features scaled to [0, pi] on the training split, labels +-1."
    from sklearn.datasets import load_breast_cancer
    from sklearn.decomposition import PCA
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler
    X, y = load_breast_cancer(return_X_y=True)
    Xtr, Xte, ytr, yte = train_test_split(X, 2.0 * y - 1, test_size=0.25, random_state=seed, stratify=y)
    sc = StandardScaler().fit(Xtr)
    pca = PCA(N_QUBITS, random_state=seed).fit(sc.transform(Xtr))
    Ztr, Zte = pca.transform(sc.transform(Xtr)), pca.transform(sc.transform(Xte))
    lo, hi = Ztr.min(0), Ztr.max(0)
    def scale(Z): return np.clip((Z - lo) / (hi - lo), 0, 1) * np.pi
    return scale(Ztr), ytr, scale(Zte), yte


def batch_order(n_rows: int, epochs: int, seed: int = 0) -> list:
    "Per epoch, the row indices of each batch (shared by every framework)."
    rng = np.random.default_rng(seed)
    return [[p[i:i + BATCH] for i in range(0, n_rows, BATCH)] for p in (rng.permutation(n_rows) for _ in range(epochs))]


def qstore_model():
    from qstore.ml.encoding import DataEncoder
    from qstore.ml.layers import HardwareEfficientQuantumLayer, QuantumModel
    return QuantumModel(DataEncoder('angle', n_features=N_QUBITS, rotation='ry'),
                        HardwareEfficientQuantumLayer(N_QUBITS, LAYERS), ['Z0'], head='affine')


def initial_weights():
    "qstore's seeded initial weights: circuit weights, then the head's scale a and bias b."
    return qstore_model().init_weights(seed=0)


def train_qstore(data, epochs, w0):
    "Train with qstore's model, adjoint gradient and Adam; per epoch (wall clock, loss, held-out accuracy)."
    from qstore.backends.base import LocalBackend
    from qstore.ml.optim import AdaptiveGradientOptimizer
    Xtr, ytr, Xte, yte = data
    m, be = qstore_model(), LocalBackend()
    opt = AdaptiveGradientOptimizer('adam', LR, 'adjoint')
    w, log = np.array(w0), []
    for batches in batch_order(len(Xtr), epochs):
        losses = []
        for idx in batches:
            yb = ytr[idx, None]
            def mse(out, yb=yb): return float(((out - yb) ** 2).mean()), 2 * (out - yb) / out.size
            w, info = opt.step(m, w, Xtr[idx], mse, be)
            losses.append(info['loss'])
        acc = float((np.sign(m(Xte, w, backend=be)[:, 0]) == yte).mean())
        log.append((time.time(), float(np.mean(losses)), acc))
    return log, w


def train_jax(data, epochs, w0):
    "The same model, loss, optimizer and batches in PennyLane default.qubit + jax.jit + optax (float64)."
    import jax
    jax.config.update('jax_enable_x64', True)
    import jax.numpy as jnp
    import optax
    import pennylane as qml
    from common import pennylane_reference
    Xtr, ytr, Xte, yte = data
    dev = qml.device('default.qubit', wires=N_QUBITS)
    @qml.qnode(dev, interface='jax')
    def z0(x, w):
        pennylane_reference(qml, x, w, N_QUBITS, LAYERS)
        return qml.expval(qml.PauliZ(0))
    def out(w, x): return w[-2] * z0(x, w) + w[-1]
    def loss(w, x, y): return jnp.mean((out(w, x) - y) ** 2)
    opt = optax.adam(LR)
    @jax.jit
    def step(w, s, x, y):
        val, g = jax.value_and_grad(loss)(w, x, y)
        upd, s = opt.update(g, s, w)
        return optax.apply_updates(w, upd), s, val
    predict = jax.jit(out)
    w = jnp.asarray(w0)
    s, log = opt.init(w), []
    for batches in batch_order(len(Xtr), epochs):
        losses = []
        for idx in batches:
            w, s, val = step(w, s, jnp.asarray(Xtr[idx]), jnp.asarray(ytr[idx]))
            losses.append(float(val))
        acc = float((np.sign(np.asarray(predict(w, jnp.asarray(Xte)))) == yte).mean())
        log.append((time.time(), float(np.mean(losses)), acc))
    return log, np.asarray(w)


def worker(framework: str, epochs: int):
    "Train in this (fresh) process and print the log as JSON; times are seconds since the process's first line."
    w0 = json.loads(sys.stdin.read())
    log, w = {'qstore': train_qstore, 'jax': train_jax}[framework](dataset(), epochs, w0)
    print(json.dumps({'log': [(t - T_LAUNCH, loss, acc) for t, loss, acc in log], 'weights': list(map(float, w))}))


def summarise(name, log) -> dict:
    "Time to 95% of the final held-out accuracy, time for all epochs, seconds per epoch after the first."
    t = [e[0] for e in log]
    final = log[-1][2]
    reach = next(e for e in log if e[2] >= 0.95 * final)
    return {'framework': name, 'seconds_to_95pct': reach[0], 'seconds_all_epochs': t[-1],
            'first_epoch_s': t[0], 's_per_epoch_after_first': (t[-1] - t[0]) / (len(t) - 1),
            'final_accuracy': final, 'final_loss': log[-1][1]}


def plot(logs, path):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for name, log in logs.items():
        ax.plot([e[0] for e in log], [e[2] for e in log], marker='.', label=name)
    ax.set(xscale='log', xlabel='wall seconds since process start (imports, compile included)',
           ylabel='held-out accuracy', title='Breast cancer, 4 qubits, 2 layers: time to accuracy')
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


COLUMNS = [('framework', 'framework', '{}'), ('seconds_to_95pct', 's to 95% of final acc', '{:.2f}'),
           ('seconds_all_epochs', 's all epochs', '{:.2f}'),
           ('s_per_epoch_after_first', 's/epoch after first', '{:.4f}'),
           ('final_accuracy', 'final acc', '{:.3f}')]


def main(argv: list[str] | None = None) -> int:
    "Train both frameworks in fresh processes, check their trajectories agree, print a table, write JSON and a plot."
    p = argparse.ArgumentParser(prog='bench/train_peers.py', description='Time to accuracy: qstore against JAX.')
    p.add_argument('--epochs', type=int, default=30)
    p.add_argument('--worker', choices=('qstore', 'jax'), help=argparse.SUPPRESS)
    p.add_argument('--out', default='bench/results/train_peers.json')
    a = p.parse_args(argv)
    if a.worker: return worker(a.worker, a.epochs) or 0
    from common import machine_info, print_table, write_json
    w0 = json.dumps(list(map(float, initial_weights())))
    runs = {}
    for name in ('qstore', 'jax'):
        r = subprocess.run([sys.executable, __file__, '--worker', name, '--epochs', str(a.epochs)], input=w0,
                           capture_output=True, text=True, check=True)
        runs[name] = json.loads(r.stdout.strip().splitlines()[-1])
    gap = float(np.max(np.abs(np.array(runs['qstore']['weights']) - np.array(runs['jax']['weights']))))
    rows = [summarise(k, v['log']) for k, v in runs.items()]
    print_table(rows, COLUMNS)
    ratio = rows[1]['s_per_epoch_after_first'] / rows[0]['s_per_epoch_after_first']
    print(f"\nsteady state: JAX s/epoch / qstore s/epoch = {ratio:.2f}; final weights differ by {gap:.1e}")
    figure = Path(a.out).with_suffix('.png')
    plot({k: v['log'] for k, v in runs.items()}, figure)
    write_json(a.out, {'benchmark': 'train_peers', 'machine': machine_info(), 'rows': rows,
                       'steady_state_ratio_jax_over_qstore': ratio, 'final_weight_gap': gap,
                       'logs': {k: v['log'] for k, v in runs.items()}})
    print(f"wrote {a.out} and {figure}")
    return 0 if gap < 1e-6 else 1


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
