"The framework bridges: qstore.ml.function's vector-Jacobian product, qstore.torch, qstore.jax and qstore.keras."
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from qstore.circuits import Circuit
from qstore.ml.encoding import DataEncoder
from qstore.ml.function import QuantumFunction
from qstore.ml.layers import HardwareEfficientQuantumLayer, QuantumModel

ROOT = Path(__file__).resolve().parent.parent


def zz_model(head='affine'):
    "A 3-feature ZZ feature map (nonlinear transform), two layers and an affine head."
    return QuantumModel(DataEncoder('zz', n_features=3), HardwareEfficientQuantumLayer(3, depth=2), head=head,
                        n_outputs=2 if head else None)


def central_vjp(qf, X, w, dY, h=1e-6):
    "Central differences of <dY, forward(X, w)> in every input and weight."
    def f(X, w): return float((qf.forward(X, w) * dY).sum())
    dX = np.zeros_like(X)
    for i in np.ndindex(X.shape):
        e = np.zeros_like(X)
        e[i] = h
        dX[i] = (f(X + e, w) - f(X - e, w)) / (2 * h)
    dw = np.array([(f(X, w + h * e) - f(X, w - h * e)) / (2 * h) for e in np.eye(len(w))])
    return dX, dw


@pytest.mark.parametrize('method', ['angle', 'dense_angle', 'zz', 'iqp', 'amplitude', 'basis'])
def test_encoder_jacobian_matches_finite_differences(method):
    enc = DataEncoder(method, n_features=4, entanglement='linear')
    rng = np.random.default_rng(1)
    X = rng.integers(0, 2, (3, 4)).astype(float) if method == 'basis' else rng.normal(size=(3, 4))
    J = enc.jacobian(X)
    assert J.shape == (3, enc.circuit().num_parameters, 4)
    if method == 'basis':  # binary features: the transform is the identity
        assert np.array_equal(J, np.broadcast_to(np.eye(4), J.shape))
        return
    h = 1e-6
    fd = np.stack([(enc.transform(X + h * e) - enc.transform(X - h * e)) / (2 * h) for e in np.eye(4)], axis=-1)
    np.testing.assert_allclose(J, fd, atol=1e-7)


@pytest.mark.parametrize('gradient', ['adjoint', 'parameter_shift'])
def test_quantum_function_vjp_matches_finite_differences(gradient):
    qf = QuantumFunction(zz_model(), gradient=gradient)
    rng = np.random.default_rng(0)
    X, w = rng.uniform(-1, 1, (3, 3)), qf.initial_weights() + 0.4
    Y, pullback = qf.vjp(X, w)
    dY = rng.normal(size=Y.shape)
    for got, want in zip(pullback(dY), central_vjp(qf, X, w, dY)): np.testing.assert_allclose(got, want, atol=1e-7)


def test_quantum_function_bad_input():
    qf = QuantumFunction(zz_model())
    w = qf.initial_weights()
    with pytest.raises(ValueError, match=r'shape \(B, 3\)'): qf.forward(np.ones((2, 4)), w)
    with pytest.raises(TypeError, match='real numbers'): qf.forward(np.array([['a', 'b', 'c']]), w)
    encoder_only = DataEncoder('angle', n_features=2).circuit()
    with pytest.raises(ValueError, match='no trainable weights'): QuantumFunction(encoder_only)
    with pytest.raises(ValueError, match='exact statevector'): QuantumFunction(zz_model(), gradient='adjoint', shots=10)


@pytest.mark.parametrize('module, extra', [('qstore.torch', 'torch'), ('qstore.jax', 'jax'), ('qstore.keras', 'keras')])
def test_missing_extra_names_the_install(module, extra):
    probe = (f"import sys; sys.modules[{extra!r}] = None\n"
             f"try:\n    import {module}\nexcept ImportError as e:\n    print(e)")
    r = subprocess.run([sys.executable, '-c', probe], capture_output=True, text=True, cwd=ROOT, check=True)
    assert f"pip install 'qstore[{extra}]'" in r.stdout


# --- torch ---------------------------------------------------------------------------------------------------------

def test_torch_gradcheck_dtypes_and_state_dict():
    torch = pytest.importorskip('torch')
    from qstore.torch import QuantumLayer
    layer = QuantumLayer(zz_model(), dtype=torch.float64)
    x = torch.rand(4, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(layer, (x,))
    assert layer(x).dtype == torch.float64 and QuantumLayer(zz_model())(x.float()).dtype == torch.float32
    y = layer(x)
    np.testing.assert_allclose(y.detach().numpy(), zz_model()(x.detach().numpy(), layer.weights.detach().numpy()),
                               atol=1e-12)
    other = QuantumLayer(zz_model(), init_seed=5, dtype=torch.float64)
    other.load_state_dict(layer.state_dict())
    assert torch.equal(other(x), y)


def test_torch_sequential_trains():
    torch = pytest.importorskip('torch')
    from qstore.torch import QuantumLayer
    rng = np.random.default_rng(0)
    X = rng.uniform(-1, 1, (64, 2))
    y = torch.tensor((np.linalg.norm(X, axis=1) < 0.7).astype(np.float32))[:, None]
    torch.manual_seed(0)
    q = QuantumLayer(QuantumModel(DataEncoder('angle', n_features=2), HardwareEfficientQuantumLayer(2, depth=2)))
    net = torch.nn.Sequential(torch.nn.Linear(2, 2), q, torch.nn.Linear(2, 1))
    opt = torch.optim.Adam(net.parameters(), lr=0.1)
    losses = []
    for _ in range(30):
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(net(torch.tensor(X, dtype=torch.float32)), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]
    assert q.weights.grad is not None and net[0].weight.grad.abs().sum() > 0  # gradients reached the inputs' layer


def test_torch_bad_input():
    torch = pytest.importorskip('torch')
    from qstore.torch import QuantumLayer
    layer = QuantumLayer(zz_model())
    with pytest.raises(ValueError, match=r'shape \(\.\.\., 3\)'): layer(torch.rand(2, 4))
    with pytest.raises(TypeError, match='float32 or float64'): layer(torch.ones(2, 3, dtype=torch.int32))
    with pytest.raises(TypeError, match='layer.double'): layer(torch.rand(2, 3, dtype=torch.float64))
    encoder_only = DataEncoder('angle', n_features=2).circuit()
    with pytest.raises(ValueError, match='no trainable weights'): QuantumLayer(encoder_only)


def test_torch_circuit_template():
    torch = pytest.importorskip('torch')
    from qstore.torch import QuantumLayer
    c = Circuit(2)
    x, w = c.parameters_vector('x', 2, 'inputs'), c.parameters_vector('w', 1, 'weights')
    c.ry(0, x[0]).ry(1, x[1]).cnot(0, 1).rx(1, w[0])
    layer = QuantumLayer(c, ['Z1'], dtype=torch.float64)
    xs = torch.rand(3, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(layer, (xs,))
    t = xs.detach().numpy()  # <Z1> = cos(x0) cos(x1) cos(w)
    want = np.cos(t[:, 0]) * np.cos(t[:, 1]) * np.cos(layer.weights.item())
    np.testing.assert_allclose(layer(xs)[:, 0].detach().numpy(), want, atol=1e-12)


# --- jax -----------------------------------------------------------------------------------------------------------

def test_jax_grad_jit_vmap():
    jax = pytest.importorskip('jax')
    import jax.numpy as jnp
    from qstore.jax import quantum_function
    f = quantum_function(zz_model())
    qf = f.qfunction
    rng = np.random.default_rng(0)
    X, w = rng.uniform(-1, 1, (3, 3)).astype(np.float32), qf.initial_weights().astype(np.float32)
    Y, pullback = qf.vjp(X, w)
    dY = np.ones_like(Y)
    want_dx, want_dw = pullback(dY)
    gx, gw = jax.grad(lambda x, w: f(x, w).sum(), argnums=(0, 1))(jnp.asarray(X), jnp.asarray(w))
    np.testing.assert_allclose(gx, want_dx, atol=1e-5)
    np.testing.assert_allclose(gw, want_dw, atol=1e-5)
    jgw = jax.jit(jax.grad(lambda w: f(X, w).sum()))(w)
    np.testing.assert_allclose(jgw, want_dw, atol=1e-5)
    fx, fw = central_vjp(qf, X.astype(float), w.astype(float), dY, h=1e-5)
    np.testing.assert_allclose(gw, fw, atol=1e-4)
    np.testing.assert_allclose(gx, fx, atol=1e-4)
    batched = jax.vmap(f, in_axes=(0, None))(jnp.asarray(X)[:, None], w)
    np.testing.assert_allclose(batched[:, 0], Y, atol=1e-6)


def test_jax_jit_refuses_an_impure_backend():
    jax = pytest.importorskip('jax')
    from qstore.jax import quantum_function
    f = quantum_function(zz_model(), shots=200)
    w = f.qfunction.initial_weights()
    assert f(np.ones((2, 3)), w).shape == (2, 2)  # eagerly fine
    with pytest.raises(TypeError, match='jax.jit cannot trace'): jax.jit(f)(np.ones((2, 3)), w)
    with pytest.raises(ValueError, match=r'\(B, 3\)'): f(np.ones((2, 4)), w)


# --- keras ---------------------------------------------------------------------------------------------------------

KERAS_SCRIPT = '''
import os, sys, tempfile
import numpy as np
import keras
from qstore.keras import QuantumLayer
from qstore.ml.encoding import DataEncoder
from qstore.ml.layers import QuantumModel, HardwareEfficientQuantumLayer
qm = QuantumModel(DataEncoder('zz', n_features=3), HardwareEfficientQuantumLayer(3, depth=2), head='affine',
                  n_outputs=2)
X = np.random.default_rng(0).uniform(-1, 1, (4, 3)).astype('float32')
net = keras.Sequential([keras.Input((3,)), keras.layers.Dense(3), QuantumLayer(qm), keras.layers.Dense(1)])
net.compile(keras.optimizers.Adam(0.05), 'mse')
before = keras.ops.convert_to_numpy(net.layers[1].quantum_weights.value).copy()
net.fit(X, np.ones((4, 1), 'float32'), epochs=2, verbose=0)
assert not np.allclose(before, keras.ops.convert_to_numpy(net.layers[1].quantum_weights.value)), 'no training'
qf = net.layers[1].qfunction
h = keras.ops.convert_to_numpy(net.layers[0](X))
want = qf.forward(h, keras.ops.convert_to_numpy(net.layers[1].quantum_weights.value))
np.testing.assert_allclose(keras.ops.convert_to_numpy(net.layers[1](h)), want, atol=1e-5)
with tempfile.TemporaryDirectory() as d:
    path = os.path.join(d, 'm.keras')
    net.save(path)
    loaded = keras.models.load_model(path)
np.testing.assert_allclose(loaded.predict(X, verbose=0), net.predict(X, verbose=0), atol=1e-6)
print('ok', keras.backend.backend())
'''


@pytest.mark.parametrize('backend, needs', [('tensorflow', 'tensorflow'), ('jax', 'jax'), ('torch', 'torch')])
def test_keras_backends_train_save_load(backend, needs):
    pytest.importorskip('keras')
    pytest.importorskip(needs)
    env = {**os.environ, 'KERAS_BACKEND': backend, 'TF_CPP_MIN_LOG_LEVEL': '3', 'PYTHONPATH': str(ROOT)}
    r = subprocess.run([sys.executable, '-c', KERAS_SCRIPT], capture_output=True, text=True, cwd=ROOT, env=env,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.strip().endswith(f'ok {backend}')


def test_keras_gradient_matches_quantum_function():
    pytest.importorskip('keras')
    tf = pytest.importorskip('tensorflow')
    import keras
    if keras.backend.backend() != 'tensorflow': pytest.skip('this process runs Keras on another backend')
    from qstore.keras import QuantumLayer
    layer = QuantumLayer(zz_model(), dtype='float64')
    X = np.random.default_rng(2).uniform(-1, 1, (4, 3))
    xt = tf.constant(X)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        y = layer(xt)
    dY = np.random.default_rng(3).normal(size=(4, 2))
    gx, gw = tape.gradient(y, [xt, layer.quantum_weights.value], output_gradients=tf.constant(dY))
    want_dx, want_dw = layer.qfunction.vjp(X, layer.quantum_weights.numpy())[1](dY)
    np.testing.assert_allclose(gx.numpy(), want_dx, atol=1e-12)
    np.testing.assert_allclose(gw.numpy(), want_dw, atol=1e-12)
    with pytest.raises(TypeError, match='given by name'): QuantumLayer(zz_model(), backend=object())
    spsa = QuantumLayer(zz_model(), gradient='spsa')  # a stateful method by name: saved as its name
    assert type(spsa.qfunction.gradient).__name__ == 'SPSAGradientEstimator' and spsa.get_config()['gradient'] == 'spsa'


# --- bench/bridges.py ----------------------------------------------------------------------------------------------

def test_bridges_benchmark_checks_peers_against_qstore():
    pytest.importorskip('torch')
    sys.path.insert(0, str(ROOT / 'bench'))
    try:
        import bridges
    finally:
        sys.path.remove(str(ROOT / 'bench'))
    peers = [p for p, mod in zip(bridges.PEERS, ('pennylane', 'pennylane_lightning', 'qiskit_machine_learning'))
             if importlib.util.find_spec(mod)]
    rows = bridges.bridges_benchmark(sizes=((3, 1, 3),), peer_names=peers, repeat=1)  # asserts equal loss and grads
    assert [r['library'] for r in rows] == ['qstore.torch.QuantumLayer', *peers]
    assert all(r['fwd_bwd_ms'] > 0 for r in rows)


def test_torch_layer_on_the_ionq_emulator(monkeypatch):
    "On IonQ (the local emulator) the layer differentiates by parameter shift on sampled results, through the pipeline."
    torch = pytest.importorskip('torch')
    from qstore.ionq.emulator import EmulatorConfig, EmulatorServer
    from qstore.torch import QuantumLayer
    model = QuantumModel(DataEncoder('angle', n_features=2), HardwareEfficientQuantumLayer(2, depth=1))
    x = torch.tensor([[0.3, -0.5], [0.8, 0.1]], dtype=torch.float64)
    exact = QuantumLayer(model, dtype=torch.float64)
    xe = x.clone().requires_grad_()
    exact(xe).sum().backward()
    with EmulatorServer(EmulatorConfig()) as srv:
        monkeypatch.setenv('IONQ_API_URL', srv.base_url)
        monkeypatch.setenv('IONQ_API_KEY', 'test-key-123')
        remote = QuantumLayer(model, backend='ionq.simulator', shots=20000, seed=0, dtype=torch.float64)
        assert remote.qfunction.gradient == 'parameter_shift' and remote.qfunction.backend.capabilities.remote
        xr = x.clone().requires_grad_()
        remote(xr).sum().backward()
        assert srv.stats()['jobs_created'] > 0
    np.testing.assert_allclose(xr.grad.numpy(), xe.grad.numpy(), atol=0.06)
    np.testing.assert_allclose(remote.weights.grad.numpy(), exact.weights.grad.numpy(), atol=0.06)


def test_jax_jit_refuses_a_remote_backend(monkeypatch):
    jax = pytest.importorskip('jax')
    from qstore.ionq.emulator import EmulatorConfig, EmulatorServer
    from qstore.jax import quantum_function
    model = QuantumModel(DataEncoder('angle', n_features=2), HardwareEfficientQuantumLayer(2, depth=1))
    with EmulatorServer(EmulatorConfig()) as srv:
        monkeypatch.setenv('IONQ_API_URL', srv.base_url)
        monkeypatch.setenv('IONQ_API_KEY', 'test-key-123')
        f = quantum_function(model, backend='ionq.simulator', shots=1000, seed=0)
        w = f.qfunction.initial_weights()
        assert f(np.zeros((1, 2)), w).shape == (1, 2)  # eagerly it runs on the emulator
        with pytest.raises(TypeError, match='runs remotely'): jax.jit(f)(np.zeros((1, 2)), w)
