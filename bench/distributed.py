"""Distributed circuit execution: one process against two Dask workers, on a LocalCluster and on a real scheduler.

For each size (qubits, layers, batch) of the reference workload (`qstore.testing.reference_circuit`, exact
expectations of Z on every qubit), the wall time of a batch is measured side by side in one run, the setups taking
turns within each repeat so that they see the same machine load (medians over `--repeat` warm runs; the first run
of each setup, which pays imports and plan building, is not timed):

1. one process: `CircuitBatchManager` with `InlineExecutor` (the whole batch simulated here, one thread);
2. `DaskExecutor` on a `LocalCluster` of 2 single-threaded worker processes;
3. `DaskExecutor` on a real `dask scheduler` and 2 `dask worker` processes (1 thread each) on 127.0.0.1, started by
   this script from the `dask` command line and stopped at the end;
4. the control without Dask, i.e. the ceiling: a pool of 2 plain processes (spawned and warmed up beforehand) pulling
   the same chunks as the executor (`plan_chunks`), and the batch cut in two halves, one per process;
5. one process simulating the executor's chunks one after the other: what the chunk sizes alone change.

Every result is checked equal, bit for bit, to the one-process result. Then, at the crossover size, batches of
1, 2, 4, ... rows find the smallest batch for which each Dask cluster beats one process. The machine has 2 cores,
so 2 workers can reach at most 2x; other users' load shows in `load_1min` (from /proc/loadavg around each size) and
in `one_process_cpu_share` (CPU seconds / wall seconds of the one-process runs). `--sim-chunk-amplitudes` sets the
simulator's memory chunk (2^21 amplitudes, 32 MB of states, by default) for every setup alike.

The default sizes take about 3 s in one process: since the simulator runs on compiled kernels, 2048 rows at 14
qubits is 0.7 s, too little to amortise a Dask round trip and 12 chunks (1.2-1.4x there).

    flock /work/wt/.bench.lock env OPENBLAS_NUM_THREADS=1 .venv/bin/python bench/distributed.py
        [--sizes 14x2x8192 16x2x2048] [--repeat 5] [--crossover 14x2] [--sim-chunk-amplitudes 262144]
        [--out bench/results/distributed.json]
"""
import argparse, functools, json, multiprocessing, os, shutil, subprocess, sys, tempfile, time
os.environ.setdefault('OPENBLAS_NUM_THREADS', '1')
from pathlib import Path
import numpy as np
HERE = Path(__file__).resolve().parent
# this file is named like Dask's `distributed`: its folder goes last on the path, so Dask wins and `common` still loads
sys.path[:] = [p for p in sys.path if Path(p or '.').resolve() != HERE] + [str(HERE)]
from common import machine_info, print_table, time_call, write_json
from qstore.backends.base import LocalBackend
from qstore.distributed import DaskExecutor, plan_chunks
from qstore.observables import as_observables
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


SIM_CHUNK_AMPLITUDES = None  # None: the simulator's default; else rows are simulated this many amplitudes at a time


def backend() -> LocalBackend:
    "The backend of every setup (one process, the executors, the process pair): the same simulator settings."
    b = LocalBackend()
    if SIM_CHUNK_AMPLITUDES is not None: b.sv.chunk_amplitudes = SIM_CHUNK_AMPLITUDES
    return b


def parse_size(s: str) -> tuple: return tuple(int(x) for x in s.split('x'))


class ProcessPair:
    """The control without Dask: a pool of plain processes (spawned, warmed up) that pull chunks one at a time. Each
    chunk carries the task (10 kB pickled, 0.3 ms to load), so the workers need nothing but qstore."""
    def __init__(self, processes: int = 2):
        self.pool = multiprocessing.get_context('spawn').Pool(processes)

    def run(self, task: tuple, values, bounds) -> np.ndarray:
        chunks = [(task, values[a:b], None, (), a) for a, b in bounds]
        return np.concatenate(self.pool.starmap(simulate_chunk, chunks, chunksize=1))

    def close(self):
        self.pool.close()
        self.pool.join()


def in_chunks(task: tuple, values, bounds) -> np.ndarray:
    "The chunks simulated one after the other in this process."
    return np.concatenate([simulate_chunk(task, values[a:b], None, (), a) for a, b in bounds])


def compare(sizes, executors: dict, repeat: int, pair: ProcessPair | None = None) -> list[dict]:
    """One row per size: one process against each executor (column prefix -> DaskExecutor) and, with `pair`, two
    plain processes on the executor's chunks (`pair_chunks`) and on two halves (`pair_halves`), and this process
    simulating the executor's chunks one after the other (`one_process_chunks`: what the chunking alone does to the
    time per row, e.g. smaller states that stay out of mmap'ed memory); results checked
    equal. The setups take turns in each repeat; medians are reported, the raw times are kept in `walls`."""
    local = CircuitBatchManager(backend(), executor=InlineExecutor())
    rows = []
    for n, layers, batch in sizes:
        load0 = load_1min()
        c = reference_circuit(n, layers)
        v = reference_values(c, batch, seed=1)
        obs = [f'Z{q}' for q in range(n)]
        ref = local.run(c, v, obs).expectations  # also the warm-up of the one-process runs
        runs = {key: functools.partial(CircuitBatchManager(backend(), executor=ex).run, c, v, obs)
                for key, ex in executors.items()}
        if pair is not None:
            task, chunks = (backend(), c, as_observables(obs, n)), plan_chunks(batch, n, len(c.ops), 2)
            runs['pair_chunks'] = functools.partial(pair.run, task, v, chunks)
            runs['pair_halves'] = functools.partial(pair.run, task, v, [(0, batch // 2), (batch // 2, batch)])
            runs['one_process_chunks'] = functools.partial(in_chunks, task, v, chunks)
        same = {}
        for key, fn in runs.items():  # warm-up, and the bit-for-bit check
            out = fn()
            same[key] = bool(np.array_equal(getattr(out, 'expectations', out), ref))
        walls, shares = {key: [] for key in ['one_process', *runs]}, []
        for _ in range(repeat):
            t, cpu = time.perf_counter(), time.process_time()
            local.run(c, v, obs)
            walls['one_process'].append(time.perf_counter() - t)
            shares.append((time.process_time() - cpu) / walls['one_process'][-1])
            for key, fn in runs.items():
                t = time.perf_counter()
                fn()
                walls[key].append(time.perf_counter() - t)
        one = float(np.median(walls['one_process']))
        row = {'qubits': n, 'layers': layers, 'gates': len(c.ops), 'batch': batch, 'one_process_s': one,
               'one_process_cpu_share': float(np.median(shares))}
        for key in runs:
            t = float(np.median(walls[key]))
            row.update({f'{key}_s': t, f'{key}_speedup': one / t, f'{key}_bitwise_equal': same[key]})
            if key in executors:
                row[f'{key}_chunks'] = executors[key].last_batch['chunks']
                row[f'{key}_rows_by_worker'] = sorted(executors[key].last_batch['rows_by_worker'].values())
        if pair is not None: row['pair_chunks_chunks'] = len(chunks)
        row.update(walls={key: [round(x, 4) for x in ts] for key, ts in walls.items()}, load_1min=[load0, load_1min()])
        rows.append(row)
    return rows


def crossover_search(executors: dict, size, max_batch: int, repeat: int) -> dict:
    """Batches of 1, 2, 4, ... rows: for each executor (column prefix -> DaskExecutor), the smallest batch for which
    its cluster is faster than one process (median of `repeat` warm runs each)."""
    n, layers = size
    c = reference_circuit(n, layers)
    obs = [f'Z{q}' for q in range(n)]
    local = CircuitBatchManager(backend(), executor=InlineExecutor())
    managers = {key: CircuitBatchManager(backend(), executor=ex) for key, ex in executors.items()}
    tried, smallest, batch = [], dict.fromkeys(executors), 1
    while batch <= max_batch:
        v = reference_values(c, batch, seed=2)
        one = time_call(lambda: local.run(c, v, obs), repeat=repeat, warmup=1)['median_s']
        row = {'batch': batch, 'one_process_s': one}
        for key, m in managers.items():
            row[f'{key}_s'] = time_call(lambda: m.run(c, v, obs), repeat=repeat, warmup=1)['median_s']
            row[f'{key}_chunks'] = executors[key].last_batch['chunks']
            if row[f'{key}_s'] < row['one_process_s'] and smallest[key] is None: smallest[key] = batch
        tried.append(row)
        batch *= 2
    return {'qubits': n, 'layers': layers, 'smallest_paying_batch': smallest, 'tried': tried}


def distributed_benchmark(sizes=((14, 2, 8192), (16, 2, 2048)), repeat: int = 5, crossover=(14, 2),
                          max_crossover_batch: int = 2048, cli: bool = True) -> tuple[list, dict]:
    "Start the clusters and the process pair, run `compare` and `crossover_search`, stop everything."
    import distributed
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=':0')
    executors = {'local_cluster': DaskExecutor(distributed.Client(cluster))}
    procs, tmp, address, pair = [], None, None, ProcessPair(2)
    try:
        if cli:
            address, procs, tmp = start_dask_cli(2)
            client = distributed.Client(address, timeout='30s')
            client.wait_for_workers(2, timeout=60)
            executors['dask_cli'] = DaskExecutor(client)
        rows = compare(sizes, executors, repeat, pair)
        cross = crossover_search(executors, crossover, max_crossover_batch, repeat)
    finally:
        pair.close()
        for ex in executors.values(): ex.client.close()
        cluster.close()
        stop(procs, address if procs else None)
        if tmp is not None: shutil.rmtree(tmp, ignore_errors=True)
    return rows, cross


COLUMNS = [('qubits', 'n', '{}'), ('batch', 'B', '{}'), ('one_process_s', '1 process s', '{:.3f}'),
           ('one_process_cpu_share', 'cpu', '{:.2f}'),
           ('local_cluster_s', 'LocalCluster s', '{:.3f}'), ('local_cluster_speedup', 'x', '{:.2f}'),
           ('dask_cli_s', 'dask CLI s', '{:.3f}'), ('dask_cli_speedup', 'x', '{:.2f}'),
           ('pair_chunks_s', '2 procs, same chunks s', '{:.3f}'), ('pair_chunks_speedup', 'x', '{:.2f}'),
           ('pair_halves_s', '2 procs, halves s', '{:.3f}'), ('pair_halves_speedup', 'x', '{:.2f}'),
           ('one_process_chunks_s', '1 process, chunks s', '{:.3f}'),
           ('local_cluster_chunks', 'chunks', '{}'), ('all_equal', 'equal', '{}'), ('load', 'load', '{}')]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--sizes', nargs='+', default=['14x2x8192', '16x2x2048'], help='QUBITSxLAYERSxBATCH')
    p.add_argument('--repeat', type=int, default=5)
    p.add_argument('--crossover', default='14x2', help='QUBITSxLAYERS of the smallest-paying-batch search')
    p.add_argument('--max-crossover-batch', type=int, default=2048)
    p.add_argument('--no-cli', action='store_true', help='skip the `dask scheduler` + `dask worker` cluster')
    p.add_argument('--sim-chunk-amplitudes', type=int, default=None,
                   help="the simulator's memory chunk in amplitudes, for every setup (default: the simulator's)")
    p.add_argument('--out', default=str(Path(__file__).parent / 'results' / 'distributed.json'))
    a = p.parse_args(argv)
    global SIM_CHUNK_AMPLITUDES
    SIM_CHUNK_AMPLITUDES = a.sim_chunk_amplitudes
    load0, t0 = load_1min(), time.perf_counter()
    sizes = [parse_size(s) for s in a.sizes]
    rows, cross = distributed_benchmark(sizes, a.repeat, parse_size(a.crossover), a.max_crossover_batch, not a.no_cli)
    load1 = load_1min()
    for r in rows:
        r['all_equal'] = all(v for k, v in r.items() if k.endswith('_bitwise_equal'))
        r['load'] = '/'.join(f'{x:.1f}' for x in r['load_1min'])
    print_table(rows, COLUMNS)
    keys = [k for k in ('local_cluster', 'dask_cli') if f'{k}_s' in cross['tried'][0]]
    print(f"\nsmallest batch for which 2 workers beat one process at {cross['qubits']} qubits, {cross['layers']} "
          f"layers: {cross['smallest_paying_batch']}")
    print_table(cross['tried'], [('batch', 'B', '{}'), ('one_process_s', '1 process s', '{:.4f}')]
                + [c for k in keys for c in ((f'{k}_s', f'{k} s', '{:.4f}'), (f'{k}_chunks', 'chunks', '{}'))])
    print(f"\nload average (1 min) before/after: {load0:.2f} / {load1:.2f}; {time.perf_counter() - t0:.0f} s in all")
    write_json(a.out, {'benchmark': 'distributed', 'machine': machine_info(), 'rows': rows, 'crossover': cross,
                       'sim_chunk_amplitudes': backend().sv.chunk_amplitudes, 'load_1min': [load0, load1]})
    print(f"wrote {a.out}")
    return 0


if __name__ == '__main__':
    sys.exit(main())
