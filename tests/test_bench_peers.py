"""bench/peers.py, bench/train_peers.py and bench/compare.py on small sizes: the cross-checks, the regression flags and
the one-pass adjoint loss gradient at the benchmark sizes (no timing is asserted)."""

import numpy as np
import pytest

from qstore.gradients.adjoint import adjoint
from qstore.gradients.finite_diff import finite_diff
from qstore.testing import reference_circuit, reference_values



@pytest.fixture(scope='module')
def bench(bench_script):
    "The bench/ scripts these tests use, by name."
    return {name: bench_script(name) for name in ('common', 'compare', 'peers', 'train_peers')}


@pytest.mark.parametrize('n,L,B', [(4, 2, 16), (8, 4, 32), (12, 4, 4)])
@pytest.mark.parametrize('readout', ['Z0', 'all'])
def test_one_pass_loss_gradient_matches_finite_differences(n, L, B, readout):
    "The diagonal-observable, callable-cotangent adjoint path against finite differences of the same loss."
    c = reference_circuit(n, L)
    v = reference_values(c, B, seed=3)
    obs = ['Z0'] if readout == 'Z0' else [f'Z{i}' for i in range(n)]
    y = np.random.default_rng(4).uniform(-1, 1, (B, len(obs)))
    seen = []
    def cot(E):
        seen.append(E)
        return 2 * (E - y) / E.size
    r = adjoint(c, v, obs, cotangent=cot)
    assert len(seen) == 1 and np.allclose(r.value, seen[0])
    fd = finite_diff(c, v, obs)
    np.testing.assert_allclose(r.jacobian[:, 0].sum(0), np.einsum('bk,bkp->p', cot(fd.value), fd.jacobian), atol=1e-6)
    np.testing.assert_allclose(r.value, fd.value, atol=1e-12)


def test_mixed_observables_keep_the_general_path():
    "A non-diagonal observable next to Z strings: same vjp as contracting the full Jacobian."
    c = reference_circuit(3, 1)
    v = reference_values(c, 5)
    obs = ['Z0', 'X1 + 0.5*Z2', 'Y0 Z1']
    cot = np.random.default_rng(0).normal(size=(5, 3))
    full = adjoint(c, v, obs)
    np.testing.assert_allclose(adjoint(c, v, obs, cotangent=cot).jacobian[:, 0],
                               np.einsum('bk,bkp->bp', cot, full.jacobian), atol=1e-12)


def test_compare_flags_only_slower_timings(bench):
    compare = bench['compare'].compare
    stored = {'benchmark': 'peers', 'rows': [
        {'n': 4, 'layers': 2, 'batch': 16, 'readout': 'Z0', 'qstore_fwd_s': 1.0, 'qstore_grad_s': 1e-3,
         'jax_fwd_s': 5.0, 'fwd_ratio': 5.0}]}
    new = [{'n': 4, 'layers': 2, 'batch': 16, 'readout': 'Z0', 'qstore_fwd_s': 0.5, 'qstore_grad_s': 2e-3}]
    lines = compare(stored, new, threshold=1.5)
    assert [(x['timing'], round(x['ratio'], 6), x['flag']) for x in lines] == [
        ('qstore_fwd_s', 0.5, ''), ('qstore_grad_s', 2.0, 'SLOWER')]
    assert compare(stored, [{**new[0], 'readout': 'all Zi'}]) == []  # rows match by size and readout only


def test_compare_reruns_a_stored_simulator_run(bench, tmp_path):
    rows = bench['compare'].rerun('simulator', [{'n': 3, 'layers': 1, 'batch': 2, 'readout': 'Z0'}], repeat=1)
    assert [(r['n'], r['readout']) for r in rows] == [(3, 'Z0'), (3, 'all Zi')] and rows[0]['forward_ms'] > 0
    path = tmp_path / 'sim.json'
    bench['common'].write_json(path, {'benchmark': 'simulator', 'rows': rows})
    assert bench['compare'].main(['--compare', str(path), '--repeat', '1', '--threshold', '1e9']) == 0
    with pytest.raises(SystemExit, match='no stored result'): bench['compare'].main(['--compare', str(tmp_path / 'x')])


def test_peers_agree_with_qstore(bench):
    "qstore's values and loss gradient against lightning (adjoint) and Aer on one small size, as the benchmark does."
    pytest.importorskip('pennylane')
    pytest.importorskip('qiskit_aer')
    row = bench['peers'].compare_size(3, 1, 4, 'all Zi', repeat=1, jax_peer=False)
    assert row['max_err'] < 1e-10 and row['fwd_fastest_peer'] in ('lightning', 'aer')


def test_memory_ceiling_extrapolates_from_measured_peaks(bench):
    m = bench['peers'].memory_ceiling(ns=(8, 10), budget_gib=1.0)
    ratio = max(m['peak_per_state_byte']['complex128'])
    assert 1 <= ratio < 16 and m['max_n_complex128'] == int(np.floor(np.log2(2 ** 30 / (ratio * 16))))


def test_training_peers_share_data_and_batches(bench):
    tp = bench['train_peers']
    pytest.importorskip('sklearn')
    Xtr, ytr, Xte, yte = tp.dataset()
    assert Xtr.shape[1] == 4 and Xtr.min() >= 0 and Xtr.max() <= np.pi and set(np.unique(ytr)) == {-1.0, 1.0}
    order = tp.batch_order(len(Xtr), 2)
    assert sorted(np.concatenate(order[0]).tolist()) == list(range(len(Xtr))) and len(order[0][0]) == tp.BATCH
    log, w = tp.train_qstore((Xtr, ytr, Xte, yte), 1, tp.initial_weights())
    assert len(log) == 1 and 0 <= log[0][2] <= 1 and w.shape == tp.initial_weights().shape


@pytest.mark.parametrize('name', ['cirq', 'qiskit'])
@pytest.mark.parametrize('n,L', [(4, 2), (8, 4), (12, 4)])
def test_statevector_matches_cirq_and_qiskit_at_benchmark_sizes(name, n, L):
    "The optimised simulator against Cirq's and Qiskit's statevectors on the benchmark circuits (2 rows each)."
    from qstore.backends.base import LocalBackend, get_backend
    c = reference_circuit(n, L)
    v = reference_values(c, 2, seed=5)
    local = LocalBackend().statevector(c, v)
    np.testing.assert_allclose(get_backend(name).statevector(c, v), local, atol=1e-10)
    np.testing.assert_allclose(LocalBackend(dtype=np.complex64).statevector(c, v), local, atol=2e-6)
