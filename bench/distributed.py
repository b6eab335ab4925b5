"""Distributed circuit execution: one process against two Dask workers, on a LocalCluster and on a real scheduler.

For each size (qubits, layers, batch) of the reference workload (`qstore.testing.reference_circuit`, exact
expectations of Z on every qubit), the wall time of `CircuitBatchManager.run` is measured side by side in one run:

1. one process: the manager with `InlineExecutor` (the whole batch simulated here, one thread);
2. `DaskExecutor` on a `LocalCluster` of 2 single-threaded worker processes;
3. `DaskExecutor` on a real `dask scheduler` and 2 `dask worker` processes (1 thread each) on 127.0.0.1, started by
   this script from the `dask` command line and stopped at the end.

Every distributed result is checked equal, bit for bit, to the one-process result. The chunks are planned by
`plan_chunks` (the executor's default). Then, at the crossover size, batches of 1, 2, 4, ... rows find the smallest
batch for which the LocalCluster beats one process. The machine has 2 cores, so 2 workers can reach at most 2x;
other users' load on the machine shows in `load_1min` (from /proc/loadavg before and after), and a control without
Dask (the batch split over a pool of 2 plain processes) shows what two processes can gain at all at that moment.

    flock /work/wt/.bench.lock env OPENBLAS_NUM_THREADS=1 .venv/bin/python bench/distributed.py
        [--sizes 14x2x256 16x2x64] [--repeat 3] [--crossover 14x2] [--out bench/results/distributed.json]
"""
import argparse, json, os, shutil, subprocess, sys, tempfile, time
os.environ.setdefault('OPENBLAS_NUM_THREADS', '1')
from pathlib import Path
import numpy as np
HERE = Path(__file__).resolve().parent
# this file is named like Dask's `distributed`: its folder goes last on the path, so Dask wins and `common` still loads
sys.path[:] = [p for p in sys.path if Path(p or '.').resolve() != HERE] + [str(HERE)]
from common import machine_info, print_table, time_call, write_json
from qstore.backends.base import LocalBackend
from qstore.distributed import DaskExecutor
from qstore.pipeline.batch import CircuitBatchManager, InlineExecutor, simulate_chunk
from qstore.testing import reference_circuit, reference_values


def load_1min() -> float:
    return float(Path('/proc/loadavg').read_text().split()[0])


def start_dask_cli(workers: int = 2, timeout: float = 60.0) -> tuple:
    "A `dask scheduler` and `workers` single-threaded `dask worker` processes on 127.0.0.1: (address, processes, dir)."
    tmp = Path(tempfile.mkdtemp(prefix='qstore-dask-'))
    dask = shutil.which('dask') or str(Path(sys.executable).parent / 'dask')
    sched_file = tmp / 'scheduler.json'
    procs = [subprocess.Popen([dask, 'scheduler', '--host', '127.0.0.1', '--port', '0', '--no-dashboard',
                               '--scheduler-file', str(sched_file)], stdout=subprocess.DEVNULL,
                              stderr=open(tmp / 'scheduler.log', 'w'))]
    t0 = time.monotonic()
    while not sched_file.exists():
        if time.monotonic() - t0 > timeout: raise RuntimeError(f"dask scheduler did not start; see {tmp}")
        time.sleep(0.1)
    for i in range(workers):
        procs.append(subprocess.Popen([dask, 'worker', '--scheduler-file', str(sched_file), '--nthreads', '1',
                                       '--nworkers', '1', '--no-dashboard', '--host', '127.0.0.1'],
                                      stdout=subprocess.DEVNULL, stderr=open(tmp / f'worker{i}.log', 'w')))
    return json.loads(sched_file.read_text())['address'], procs, tmp


def stop(procs, address: str | None = None):
    "Stop a `start_dask_cli` cluster: ask the scheduler to shut everything down, then terminate what is left."
    if address:
        import distributed
        try:
            with distributed.Client(address, timeout='5s') as client: client.shutdown()
        except (OSError, TimeoutError): pass
    for p in reversed(procs): p.terminate()
    for p in procs:
        try: p.wait(10)
        except subprocess.TimeoutExpired: p.kill()


def parse_size(s: str) -> tuple: return tuple(int(x) for x in s.split('x'))


def compare(sizes, executors: dict, repeat: int) -> list[dict]:
    """One row per size: one process against each executor (column prefix -> DaskExecutor), results checked equal.
    The runs alternate (one process, then each executor, `repeat` times) so that they see the same machine load;
    medians are reported, and `one_process_cpu_share` (CPU seconds / wall seconds of the one-process runs) shows
    how much of a core the machine's other users left this process."""
    local = CircuitBatchManager(LocalBackend(), executor=InlineExecutor())
    rows = []
    for n, layers, batch in sizes:
        c = reference_circuit(n, layers)
        v = reference_values(c, batch, seed=1)
        obs = [f'Z{q}' for q in range(n)]
        ref = local.run(c, v, obs).expectations
        managers = {key: CircuitBatchManager(LocalBackend(), executor=ex) for key, ex in executors.items()}
        same = {key: np.array_equal(m.run(c, v, obs).expectations, ref) for key, m in managers.items()}  # warm-up
        walls, shares = {key: [] for key in ['one_process', *managers]}, []
        for _ in range(repeat):
            t, cpu = time.perf_counter(), time.process_time()
            local.run(c, v, obs)
            walls['one_process'].append(time.perf_counter() - t)
            shares.append((time.process_time() - cpu) / walls['one_process'][-1])
            for key, m in managers.items():
                t = time.perf_counter()
                m.run(c, v, obs)
                walls[key].append(time.perf_counter() - t)
        one = float(np.median(walls['one_process']))
        row = {'qubits': n, 'layers': layers, 'gates': len(c.ops), 'batch': batch, 'one_process_s': one,
               'one_process_cpu_share': float(np.median(shares))}
        for key, ex in executors.items():
            t = float(np.median(walls[key]))
            row.update({f'{key}_s': t, f'{key}_speedup': one / t, f'{key}_chunks': ex.last_batch['chunks'],
                        f'{key}_bitwise_equal': bool(same[key])})
        rows.append(row)
    return rows


def process_pair_ceiling(sizes, repeat: int) -> list[dict]:
    """The control without Dask: the same batch in this process, and split in two halves over a pool of two
    processes (started and warmed up beforehand), alternating. Its speed-up is what two processes can get on this
    machine at this moment, whatever runs them."""
    import multiprocessing
    from qstore.observables import as_observables
    out = []
    with multiprocessing.get_context('spawn').Pool(2) as pool:
        for n, layers, batch in sizes:
            c = reference_circuit(n, layers)
            v = reference_values(c, batch, seed=1)
            task = (LocalBackend(), c, as_observables([f'Z{q}' for q in range(n)], n))
            halves = [(task, v[:batch // 2]), (task, v[batch // 2:])]
            pool.starmap(simulate_chunk, halves)
            one, two = [], []
            for _ in range(repeat):
                t = time.perf_counter()
                simulate_chunk(task, v)
                one.append(time.perf_counter() - t)
                t = time.perf_counter()
                pool.starmap(simulate_chunk, halves)
                two.append(time.perf_counter() - t)
            out.append({'qubits': n, 'batch': batch, 'one_process_s': float(np.median(one)),
                        'two_processes_s': float(np.median(two)),
                        'speedup': float(np.median(one)) / float(np.median(two))})
    return out


def crossover_search(ex, size, max_batch: int, repeat: int) -> dict:
    "Batches of 1, 2, 4, ... rows: the smallest for which the executor's cluster is faster than one process."
    n, layers = size
    c = reference_circuit(n, layers)
    obs = [f'Z{q}' for q in range(n)]
    local = CircuitBatchManager(LocalBackend(), executor=InlineExecutor())
    mgr = CircuitBatchManager(LocalBackend(), executor=ex)
    tried, smallest, batch = [], None, 1
    while batch <= max_batch:
        v = reference_values(c, batch, seed=2)
        mgr.run(c, v, obs)
        one = time_call(lambda: local.run(c, v, obs), repeat=repeat, warmup=1)['median_s']
        two = time_call(lambda: mgr.run(c, v, obs), repeat=repeat, warmup=0)['median_s']
        tried.append({'batch': batch, 'one_process_s': one, 'local_cluster_s': two, 'chunks': ex.last_batch['chunks']})
        if two < one and smallest is None: smallest = batch
        batch *= 2
    return {'qubits': n, 'layers': layers, 'smallest_paying_batch': smallest, 'tried': tried}


def distributed_benchmark(sizes=((14, 2, 256), (16, 2, 64)), repeat: int = 3, crossover=(14, 2),
                          max_crossover_batch: int = 64, cli: bool = True) -> tuple[list, dict]:
    "Start the clusters, run `compare` and `crossover_search` (on the LocalCluster), stop the clusters."
    import distributed
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=':0')
    executors = {'local_cluster': DaskExecutor(distributed.Client(cluster))}
    procs, tmp, address = [], None, None
    try:
        if cli:
            address, procs, tmp = start_dask_cli(2)
            client = distributed.Client(address, timeout='30s')
            client.wait_for_workers(2, timeout=60)
            executors['dask_cli'] = DaskExecutor(client)
        rows = compare(sizes, executors, repeat)
        cross = crossover_search(executors['local_cluster'], crossover, max_crossover_batch, repeat)
    finally:
        for ex in executors.values(): ex.client.close()
        cluster.close()
        stop(procs, address if procs else None)
        if tmp is not None: shutil.rmtree(tmp, ignore_errors=True)
    return rows, cross


COLUMNS = [('qubits', 'n', '{}'), ('gates', 'gates', '{}'), ('batch', 'B', '{}'),
           ('one_process_s', '1 process s', '{:.3f}'), ('one_process_cpu_share', 'cpu share', '{:.2f}'),
           ('local_cluster_s', 'LocalCluster(2) s', '{:.3f}'), ('local_cluster_speedup', 'x', '{:.2f}'),
           ('dask_cli_s', 'dask CLI (2) s', '{:.3f}'), ('dask_cli_speedup', 'x', '{:.2f}'),
           ('local_cluster_chunks', 'chunks', '{}'), ('dask_cli_bitwise_equal', 'equal', '{}')]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--sizes', nargs='+', default=['14x2x256', '16x2x64'], help='QUBITSxLAYERSxBATCH')
    p.add_argument('--repeat', type=int, default=3)
    p.add_argument('--crossover', default='14x2', help='QUBITSxLAYERS of the smallest-paying-batch search')
    p.add_argument('--max-crossover-batch', type=int, default=64)
    p.add_argument('--no-cli', action='store_true', help='skip the `dask scheduler` + `dask worker` cluster')
    p.add_argument('--out', default=str(Path(__file__).parent / 'results' / 'distributed.json'))
    a = p.parse_args(argv)
    load0, t0 = load_1min(), time.perf_counter()
    sizes = [parse_size(s) for s in a.sizes]
    ceiling = process_pair_ceiling(sizes, a.repeat)
    rows, cross = distributed_benchmark(sizes, a.repeat, parse_size(a.crossover), a.max_crossover_batch, not a.no_cli)
    load1 = load_1min()
    print_table(rows, COLUMNS)
    print(f"\nsmallest batch for which 2 LocalCluster workers beat one process at {cross['qubits']} qubits, "
          f"{cross['layers']} layers: {cross['smallest_paying_batch']}")
    print_table(cross['tried'], [('batch', 'B', '{}'), ('one_process_s', '1 process s', '{:.4f}'),
                                 ('local_cluster_s', 'LocalCluster(2) s', '{:.4f}'), ('chunks', 'chunks', '{}')])
    print("\ncontrol without Dask: the batch in one process vs its halves in a pool of 2 processes")
    print_table(ceiling, [('qubits', 'n', '{}'), ('batch', 'B', '{}'), ('one_process_s', '1 process s', '{:.3f}'),
                          ('two_processes_s', '2 processes s', '{:.3f}'), ('speedup', 'x', '{:.2f}')])
    print(f"\nload average (1 min) before/after: {load0:.2f} / {load1:.2f}; {time.perf_counter() - t0:.0f} s in all")
    write_json(a.out, {'benchmark': 'distributed', 'machine': machine_info(), 'rows': rows, 'crossover': cross,
                       'two_process_control': ceiling, 'load_1min': [load0, load1]})
    print(f"wrote {a.out}")
    return 0


if __name__ == '__main__':
    sys.exit(main())
