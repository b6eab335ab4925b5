"""Framework-bridge benchmark: forward + backward of one hybrid torch model through qstore and its peers.

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python bench/bridges.py [--repeat 5] [--out bench/results/bridges.json]

The model is Linear(n, n) -> quantum layer -> Linear(n, 1) with an MSE loss on a batch of 32. The quantum layer is
the reference workload (`qstore.testing.reference_circuit`: RY(x) encoding, then L x [RY(w) RZ(w) on every qubit,
CNOT ring]) with <Z_q> read out on every qubit, built in each library:

- qstore: `qstore.torch.QuantumLayer` (adjoint gradients, inputs and weights);
- PennyLane `qml.qnn.TorchLayer` on default.qubit (backprop, its default) and on lightning.qubit (adjoint);
- Qiskit ML `TorchConnector(EstimatorQNN(..., input_gradients=True))` with its default estimator and gradient.

Every peer is first checked to give the same loss and gradients as qstore (1e-5), so the timings are of the same
computation; a peer whose check run takes over 2 s is timed once more, the others `--repeat` times. Every library runs
on one thread (torch.set_num_threads(1); run with OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1). Peers need the `bench`
extra: pip install 'qstore[bench]'.
"""
import argparse
import sys
import time

import numpy as np
import torch
from common import pennylane_reference, qiskit_reference, report, time_call

from qstore.ml.encoding import DataEncoder
from qstore.ml.layers import HardwareEfficientQuantumLayer, QuantumModel
from qstore.testing import reference_circuit
from qstore.torch import QuantumLayer

BRIDGE_SIZES = ((4, 2, 32), (8, 4, 32))  # (qubits, layers, batch)
BRIDGE_COLUMNS = [('n', 'n', '{}'), ('layers', 'L', '{}'), ('batch', 'B', '{}'), ('library', 'library', '{}'),
                  ('fwd_bwd_ms', 'forward+backward ms (median)', '{:.1f}'), ('runs', 'runs', '{}'),
                  ('qstore_speedup', 'qstore speed-up', '{:.1f}x')]


def qstore_layer(n: int, L: int):
    "qstore's quantum layer on the reference circuit."
    m = QuantumModel(DataEncoder('angle', n_features=n, rotation='ry'), HardwareEfficientQuantumLayer(n, L))
    assert [(o.gate, o.qubits) for o in m.circuit] == [(o.gate, o.qubits) for o in reference_circuit(n, L)]
    return QuantumLayer(m, dtype=torch.float64)


def _ring(n: int) -> list:
    "The CNOT pairs of the reference entangler (a ring; a single pair for 2 qubits)."
    return [(i, i + 1) for i in range(n - 1)] if n == 2 else [(i, (i + 1) % n) for i in range(n)]


def pennylane_layer(n: int, L: int, device: str, diff_method: str):
    "The same circuit as a PennyLane TorchLayer; weights (L, n, 2) in qstore's order."
    import pennylane as qml
    dev = qml.device(device, wires=n)

    @qml.qnode(dev, interface='torch', diff_method=diff_method)
    def circuit(inputs, weights):
        pennylane_reference(qml, inputs, weights.reshape(-1), n, L, _ring(n))
        return [qml.expval(qml.PauliZ(q)) for q in range(n)]
    return qml.qnn.TorchLayer(circuit, {'weights': (L, n, 2)})


def qiskit_layer(n: int, L: int):
    "The same circuit as a Qiskit ML TorchConnector over an EstimatorQNN with input gradients."
    from qiskit.quantum_info import SparsePauliOp
    from qiskit_machine_learning.connectors import TorchConnector
    from qiskit_machine_learning.neural_networks import EstimatorQNN
    qc, x, w = qiskit_reference(n, L, _ring(n))
    obs = [SparsePauliOp.from_sparse_list([('Z', [q], 1.0)], n) for q in range(n)]
    qnn = EstimatorQNN(circuit=qc, input_params=list(x), weight_params=list(w), observables=obs, input_gradients=True)
    return TorchConnector(qnn)


def _set_weights(layer, flat: np.ndarray):
    "Copy qstore's flat weight vector (RY, RZ per qubit per layer) into a peer's layer."
    with torch.no_grad():
        p = next(layer.parameters())
        p.copy_(torch.as_tensor(flat, dtype=p.dtype).reshape(p.shape))


class _Float64(torch.nn.Module):
    "Qiskit ML's TorchConnector returns float32 whatever its input; the rest of the network is float64."
    def forward(self, x): return x.double()


def hybrid(n: int, quantum) -> torch.nn.Sequential:
    "Linear(n, n) -> quantum -> Linear(n, 1), with seeded classical layers (the same in every library)."
    torch.manual_seed(0)
    first, last = torch.nn.Linear(n, n).double(), torch.nn.Linear(n, 1).double()
    return torch.nn.Sequential(first, quantum, _Float64(), last)


def step(net, X, y):
    "One forward + backward; returns the loss and every parameter's gradient."
    net.zero_grad()
    loss = torch.nn.functional.mse_loss(net(X), y)
    loss.backward()
    return loss.item(), [p.grad.clone() for p in net.parameters()]


def peers(n: int, L: int, names) -> dict:
    "name -> quantum layer for the peers asked for."
    make = {'pennylane default.qubit (backprop)': lambda: pennylane_layer(n, L, 'default.qubit', 'backprop'),
            'pennylane lightning.qubit (adjoint)': lambda: pennylane_layer(n, L, 'lightning.qubit', 'adjoint'),
            'qiskit-ml TorchConnector': lambda: qiskit_layer(n, L)}
    return {k: make[k]() for k in names}


PEERS = ('pennylane default.qubit (backprop)', 'pennylane lightning.qubit (adjoint)', 'qiskit-ml TorchConnector')


def bridges_benchmark(sizes=BRIDGE_SIZES, peer_names=PEERS, repeat: int = 5) -> list[dict]:
    "Time forward + backward per library and size, after checking each peer against qstore."
    rows = []
    for n, L, B in sizes:
        rng = np.random.default_rng(0)
        X = torch.tensor(rng.uniform(-1, 1, (B, n)))
        y = torch.tensor(rng.uniform(-1, 1, (B, 1)))
        ours = qstore_layer(n, L)
        flat = ours.weights.detach().numpy() + rng.uniform(-np.pi, np.pi, ours.weights.shape)
        _set_weights(ours, flat)
        layers = {'qstore.torch.QuantumLayer': ours, **peers(n, L, peer_names)}
        ref = None
        times = {}
        for name, q in layers.items():
            _set_weights(q, flat)
            net = hybrid(n, q)
            t0 = time.perf_counter()
            loss, grads = step(net, X, y)  # the check run is also the warm-up
            slow = time.perf_counter() - t0 > 2
            if ref is None: ref = (loss, grads)
            else:
                assert abs(loss - ref[0]) < 1e-5, (name, loss, ref[0])
                for g, r in zip(grads, ref[1]): assert torch.allclose(g.reshape(r.shape).double(), r, atol=1e-5), name
            t = time_call(lambda: step(net, X, y), repeat=1 if slow else repeat, warmup=0 if slow else 1)
            times[name] = t['median_s']
            rows.append({'n': n, 'layers': L, 'batch': B, 'library': name, 'fwd_bwd_ms': t['median_s'] * 1e3,
                         'runs': t['runs']})
        fastest_peer = min((v for k, v in times.items() if k != 'qstore.torch.QuantumLayer'), default=None)
        for r in rows[-len(layers):]:
            if fastest_peer and r['library'] == 'qstore.torch.QuantumLayer':
                r['qstore_speedup'] = fastest_peer / times['qstore.torch.QuantumLayer']
    return rows


def main(argv: list[str] | None = None) -> int:
    "Time forward + backward per library, print a table and write JSON."
    p = argparse.ArgumentParser(prog='bench/bridges.py',
                                description='Benchmark qstore.torch against PennyLane and Qiskit ML torch layers.')
    p.add_argument('--repeat', type=int, default=5)
    p.add_argument('--out', default='bench/results/bridges.json')
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    return report('bridges', bridges_benchmark(repeat=a.repeat), BRIDGE_COLUMNS, a.out)


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
