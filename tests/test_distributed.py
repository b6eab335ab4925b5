"""Dask: circuit chunks on a real `dask scheduler` + 2 `dask worker` processes on 127.0.0.1, and training sweeps.

`.ci/run` starts the cluster and exports its address as QSTORE_DASK_SCHEDULER; without it, the module starts its own
(with the `dask` command line, as `bench/distributed.py` does) and stops it afterwards.
"""
import concurrent.futures
import importlib.util
import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

distributed = pytest.importorskip('distributed')

from qstore.backends.base import LocalBackend  # noqa: E402
from qstore.distributed import DaskExecutor, dask_client, kill_busy_worker  # noqa: E402
from qstore.jobs import train_from_config  # noqa: E402
from qstore.ml.checkpoint import CheckpointManager  # noqa: E402
from qstore.pipeline.batch import CircuitBatchManager, InlineExecutor  # noqa: E402
from qstore.storage.db import Database  # noqa: E402
from qstore.sweep import compare_runs, sweep, sweep_cli  # noqa: E402
from qstore.testing import reference_circuit, reference_values  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def load_bench():
    "bench/distributed.py as a module (its name would shadow Dask's `distributed`, so it is loaded under another)."
    sys.path.append(str(ROOT / 'bench'))
    try:
        spec = importlib.util.spec_from_file_location('bench_distributed', ROOT / 'bench' / 'distributed.py')
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod
    finally:
        sys.path.remove(str(ROOT / 'bench'))


@pytest.fixture(scope='module')
def scheduler():
    "The address of a scheduler with 2 workers: QSTORE_DASK_SCHEDULER, or one started here on 127.0.0.1."
    address = os.environ.get('QSTORE_DASK_SCHEDULER')
    if address:
        yield address
        return
    bench = load_bench()
    address, procs, tmp = bench.start_dask_cli(2)
    try: yield address
    finally:
        bench.stop(procs, address)
        import shutil
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope='module')
def client(scheduler):
    c = distributed.Client(scheduler, timeout='30s')
    c.wait_for_workers(2, timeout=60)
    yield c
    c.close()


def test_exact_and_seeded_shots_equal_one_process(client):
    c, ex = reference_circuit(10, 2), DaskExecutor(client, chunk_rows=7)
    v, obs = reference_values(c, 40), ['Z0', 'X1 X2', '0.5*Y3']
    dist, inline = CircuitBatchManager(LocalBackend(), executor=ex), CircuitBatchManager(executor=InlineExecutor())
    assert np.array_equal(dist.run(c, v, obs).expectations, LocalBackend().run(c, v, obs).expectations)
    assert ex.last_batch['chunks'] == 5  # chunk_rows 7 rounds up to 8 (ROW_ALIGN)
    assert np.array_equal(dist.run(c, v).probabilities, LocalBackend().run(c, v).probabilities)
    counts = dist.run(c, v, shots=300, seed=5).counts
    assert np.array_equal(counts, inline.run(c, v, shots=300, seed=5).counts)
    assert not np.array_equal(counts, inline.run(c, v, shots=300, seed=6).counts)
    assert np.array_equal(dist.run(c, v, obs, shots=300, seed=1).expectations,
                          inline.run(c, v, obs, shots=300, seed=1).expectations)
    adaptive = CircuitBatchManager(LocalBackend(), executor=DaskExecutor(client, min_chunk_seconds=0.0002))
    assert np.array_equal(adaptive.run(c, v, obs).expectations, LocalBackend().run(c, v, obs).expectations)
    assert adaptive.executor.last_batch['chunks'] > 1


def test_template_shipped_once_per_worker_not_per_chunk(client):
    ex = DaskExecutor(client, chunk_rows=3)
    mgr = CircuitBatchManager(LocalBackend(), executor=ex)
    c = reference_circuit(6, 1)
    for seed in range(3): mgr.run(c, reference_values(c, 30, seed=seed), ['Z0'])  # 3 batches x 4 chunks
    key = next(iter(ex._shipped))
    loads = ex.template_loads()
    assert ex.templates_shipped == 1 and len(loads) == 2
    assert [per_worker.get(key) for per_worker in loads.values()] == [1, 1]


def test_killed_worker_loses_nothing_and_its_chunks_run_once_more(client):
    c = reference_circuit(14, 2)
    v = reference_values(c, 64)
    ex = DaskExecutor(client, chunk_rows=8)
    mgr = CircuitBatchManager(LocalBackend(), executor=ex)
    ref = LocalBackend().run(c, v, ['Z0', 'Z7']).expectations
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        killed = pool.submit(kill_busy_worker, client)
        out = mgr.run(c, v, ['Z0', 'Z7']).expectations
    assert killed.result() is not None
    assert np.array_equal(out, ref)
    runs = ex.chunk_runs()
    assert len(runs) == 8 and set(runs) <= {1, 2} and 2 in runs  # lost chunks ran again, once; the rest once
    client.wait_for_workers(2, timeout=60)  # the nanny restarts the killed worker


def write_config(path: Path, epochs: int, checkpoint_interval: int) -> Path:
    path.write_text(yaml.safe_dump({
        'training': {'epochs': epochs, 'batch_size': 5, 'learning_rate': 0.1, 'seed': 0,
                     'checkpoint_interval': checkpoint_interval, 'gradient_method': 'adjoint'},
        'model': {'layers': [{'type': 'HardwareEfficientQuantumLayer', 'depth': 1}], 'name': 'iris-t'},
        'data': {'name': 'iris'}}))
    return path


def test_sweep_resumes_a_killed_workers_run_from_its_checkpoint(client, tmp_path):
    cfg, home = write_config(tmp_path / 'iris.yaml', epochs=3, checkpoint_interval=1), tmp_path / 'home'
    ckdir = home / 'sweeps' / 'iris' / 'lr0.05' / 'checkpoints'
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        running = pool.submit(sweep, cfg, {'lr': [0.05, 0.2]}, home, client)
        t0, killed, pids = time.monotonic(), None, client.run(os.getpid)
        while killed is None and not running.done() and time.monotonic() - t0 < 60:  # kill lr0.05's worker
            found = CheckpointManager(ckdir).latest() if ckdir.exists() else None
            if found and found[1]['step'] >= 3:
                busy = [w for w, keys in client.processing().items() if any('lr0.05' in k for k in keys)]
                if busy:
                    os.kill(pids[busy[0]], 9)
                    killed = busy[0]
            time.sleep(0.01)
        results = {r['tag']: r for r in running.result(timeout=120)}
    lost = results['lr0.05']
    assert killed is not None and lost['worker'] != killed and lost['resumed_from_step'] >= 3
    assert results['lr0.2']['resumed_from_step'] is None
    db = Database.open(home)
    assert {r.status for r in db.metrics.runs()} == {'finished'} and len(db.metrics.runs()) == 2
    assert sorted(m.name for m in db.models.list()) == ['iris-t-lr0.05', 'iris-t-lr0.2']
    # the resumed run ends exactly where an uninterrupted run of the same config ends
    plain = yaml.safe_load(Path(lost['config']).read_text())
    plain['training'].update(checkpoint_dir=str(tmp_path / 'plain'), register_model=None)
    (tmp_path / 'plain.yaml').write_text(yaml.safe_dump(plain))
    ref = train_from_config(tmp_path / 'plain.yaml', home=tmp_path / 'home2', log=lambda m: None)
    assert ref['train'] == lost['train'] and ref['test'] == lost['test']
    table, fig = compare_runs(list(results.values()), home)
    assert list(table.column('epochs')) == [3, 3] and table[0]['resumed_from_step'] >= 3
    assert len(fig.axes) == 2 and len(fig.axes[0].lines) == 2
    client.wait_for_workers(2, timeout=60)


def test_sweep_command_line(scheduler, tmp_path, capsys):
    cfg = write_config(tmp_path / 'tiny.yaml', epochs=1, checkpoint_interval=0)
    assert sweep_cli([str(cfg), '--grid', 'lr=0.1', 'depth=1,2', '--home', str(tmp_path / 'h'),
                      '--scheduler', scheduler]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:2] == ['lr', 'depth'] and len(lines) == 5  # header, 2 runs, blank, plot path
    assert (tmp_path / 'h' / 'sweeps' / 'tiny' / 'comparison.png').exists()
    assert len(Database.open(tmp_path / 'h').models.list()) == 2


def test_bad_input(tmp_path):
    with pytest.raises(TypeError, match='distributed.Client, an address or None'): dask_client(3)
    with pytest.raises(ValueError, match='not a LocalBackend'): CircuitBatchManager('cirq', executor=InlineExecutor())
    cfg = write_config(tmp_path / 'c.yaml', epochs=1, checkpoint_interval=0)
    with pytest.raises(ValueError, match='unknown grid key'): sweep(cfg, {'lrate': [0.1]}, tmp_path / 'h', 'tcp://x:1')
    with pytest.raises(ValueError, match='non-empty list'): sweep(cfg, {'lr': []}, tmp_path / 'h')
    with pytest.raises(ValueError, match='learning_rate'): sweep(cfg, {'lr': [0.1, -1.0]}, tmp_path / 'h', 'tcp://x:1')
    with pytest.raises(ValueError, match='every worker can open'): sweep(cfg, {'lr': [0.1]}, ':memory:')


def test_distributed_benchmark_on_the_cli_cluster(client):
    bench = load_bench()
    pair = bench.ProcessPair(2)
    try:
        rows = bench.compare(((8, 1, 16),), {'dask_cli': DaskExecutor(client, chunk_rows=8)}, repeat=1, pair=pair)
    finally: pair.close()
    row = rows[0]
    assert row['dask_cli_bitwise_equal'] and row['dask_cli_chunks'] == 2 and row['dask_cli_s'] > 0
    assert row['pair_chunks_bitwise_equal'] and row['pair_halves_bitwise_equal'] and row['pair_halves_s'] > 0
    assert sum(row['dask_cli_rows_by_worker']) == 16 and len(row['walls']['one_process']) == 1
    cross = bench.crossover_search({'dask_cli': DaskExecutor(client)}, (6, 1), max_batch=2, repeat=1)
    assert [t['batch'] for t in cross['tried']] == [1, 2] and set(cross['smallest_paying_batch']) == {'dask_cli'}
