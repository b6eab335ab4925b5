"""IonQ pipeline benchmark: wall time and HTTP requests to run a batch of circuits through IonQ's API.

Runs against qstore's IonQ emulator on 127.0.0.1 with 100 ms injected latency on every request and 50 ms of
simulated execution per circuit, for batches of 20 and 200 bindings of the 4-qubit hardware-efficient reference
model (`qstore.testing.reference_circuit(4, 2)`), 1,000 shots each, through:

1. qstore's `IonQBatchClient.run_batch` (one multi-circuit job);
2. cirq-ionq: `Service.run_batch` as shipped (it polls every 1 s and offers no way to change that), and the same
   steps with the polling exposed: `Service.create_batch_job(...).results(polling_seconds=POLL)`;
3. qiskit-ionq: `backend.run([circuits...])` (one multi-circuit job), `job.result(wait=POLL)` (default wait is 5 s);
4. sequential single-circuit submission (submit, wait, fetch, one circuit at a time), as the original design did,
   with qstore's client and the same polling settings.

Every result is checked against the exact probabilities (total-variation distance of the sampled distributions), so
each pipeline demonstrably ran the right circuits. Requests are counted by the emulator.

    OPENBLAS_NUM_THREADS=1 .venv/bin/python bench/ionq_pipeline.py [--sizes 20 200] [--repeat 3] [--sequential-cap N]
"""
import argparse, os, sys, warnings
import numpy as np
from common import machine_info, print_table, time_call, write_json

from qstore.testing import reference_circuit, reference_values
from qstore.backends.convert import to_cirq, to_qiskit
from qstore.ionq.client import IonQBatchClient
from qstore.ionq.emulator import EmulatorConfig, EmulatorServer
from qstore.ionq.serialize import to_ionq_json_batch
from qstore.simulator import StatevectorSimulator

KEY = 'bench-key'  # the emulator accepts any key; nothing here talks to IonQ
LATENCY, EXECUTION = 0.100, 0.050  # seconds per request, seconds per circuit
SHOTS, QUBITS, LAYERS = 1000, 4, 2
POLL = 0.05  # seconds between status polls, for every client that lets us choose


def ours(srv, client, c, v):
    "qstore: serialise all rows at once, one multi-circuit job, predicted-time polling."
    res = client.sync.run_batch(to_ionq_json_batch(c, v), shots=SHOTS, timeout=600)
    rng = np.random.default_rng(0)
    return np.stack([r.counts(rng) for r in res]) / SHOTS


def sequential(srv, client, c, v):
    "The original design: one single-circuit job at a time, each submitted, awaited and fetched before the next."
    rng, out = np.random.default_rng(0), []
    for row in to_ionq_json_batch(c, v):
        job = client.sync.submit(row, shots=SHOTS)
        client.sync.wait(job, timeout=600)
        out.append(client.sync.get_results_parallel(job)[0].counts(rng))
    return np.stack(out) / SHOTS


def _cirq_circuits(c, v):
    import cirq
    q = cirq.LineQubit.range(c.n_qubits)
    return [to_cirq(c, row) + cirq.Circuit(cirq.measure(*q, key='m')) for row in v]


def _cirq_probs(results, n):
    weights = 1 << np.arange(n)  # measurement column k is LineQubit(k) = qstore qubit k
    return np.stack([np.bincount(r.measurements['m'] @ weights, minlength=2 ** n) for r in results]) / SHOTS


def cirq_run_batch(srv, service, c, v):
    "cirq-ionq as shipped: Service.run_batch (fixed 1 s polling)."
    return _cirq_probs(service.run_batch(_cirq_circuits(c, v), repetitions=SHOTS, seed=0), c.n_qubits)


def cirq_fast_poll(srv, service, c, v):
    "cirq-ionq: run_batch's own steps, create_batch_job + results(polling_seconds=POLL) + to_cirq_result."
    import cirq_ionq
    job = service.create_batch_job(_cirq_circuits(c, v), repetitions=SHOTS)
    res = job.results(polling_seconds=POLL)
    res = res if isinstance(res, list) else [res]
    def as_cirq(r): return r.to_cirq_result(seed=0) if isinstance(r, cirq_ionq.SimulatorResult) else r.to_cirq_result()
    return _cirq_probs([as_cirq(r) for r in res],
                       c.n_qubits)


def qiskit_multi(srv, backend, c, v):
    "qiskit-ionq: backend.run(list of circuits) -> one multi-circuit job; result(wait=POLL)."
    qcs = []
    for row in v:
        qc = to_qiskit(c, row)
        qc.measure_all()
        qcs.append(qc)
    result = backend.run(qcs, shots=SHOTS, sampler_seed=0).result(wait=POLL)
    out = np.zeros((len(qcs), 2 ** c.n_qubits))
    for i in range(len(qcs)):
        for key, n in result.get_counts(i).items(): out[i, int(key.replace(' ', ''), 2)] = n  # clbit k = qubit k
    return out / SHOTS


def measure(srv, fn, ctx, c, v, exact, repeat):
    """Median wall time over `repeat` runs, the most requests one run made, and the worst total-variation distance to
    exact."""
    runs = []
    def once():
        srv.app.reset_stats()
        probs = fn(srv, ctx, c, v)
        runs.append((sum(srv.stats()['requests'].values()), float(0.5 * np.abs(probs - exact).sum(axis=1).max())))
    t = time_call(once, repeat=repeat, warmup=0)
    return {'wall_s': t['median_s'], 'min_s': t['min_s'], 'runs': t['runs'],
            'requests': max(r for r, _ in runs), 'max_tvd': max(d for _, d in runs)}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--sizes', type=int, nargs='+', default=[20, 200], help='batch sizes (circuits per batch)')
    p.add_argument('--repeat', type=int, default=3, help='timed runs per batch pipeline (median reported)')
    p.add_argument('--sequential-cap', type=int, default=None,
                   help='run at most this many circuits sequentially and extrapolate linearly (reported as such)')
    p.add_argument('--out', default='bench/results/ionq_pipeline.json')
    a = p.parse_args(argv)
    import cirq_ionq, qiskit_ionq
    cfg = EmulatorConfig(latency=LATENCY, execution_time=EXECUTION, seed=0)
    rows = []
    with EmulatorServer(cfg) as srv:
        # qiskit-ionq reads backend widths from the env URL, not the provider's
        os.environ['IONQ_API_URL'] = srv.base_url
        client = IonQBatchClient(KEY, srv.base_url, poll_interval=POLL, poll_max_interval=0.5)
        service = cirq_ionq.Service(remote_host=srv.url, api_key=KEY, default_target='simulator', max_retry_seconds=60)
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            qk_backend = qiskit_ionq.IonQProvider(token=KEY, url=srv.base_url).get_backend('ionq_simulator')
        pipelines = [('qstore IonQBatchClient.run_batch', ours, client),
                     ('cirq-ionq run_batch (fixed 1 s poll)', cirq_run_batch, service),
                     (f'cirq-ionq create_batch_job, poll {POLL} s', cirq_fast_poll, service),
                     (f'qiskit-ionq run([...]), poll {POLL} s', qiskit_multi, qk_backend),
                     ('sequential single-circuit jobs', sequential, client)]
        circuit = reference_circuit(QUBITS, LAYERS)
        for size in a.sizes:
            values = reference_values(circuit, size, seed=1)
            exact = StatevectorSimulator().probabilities(circuit, values)
            for name, fn, ctx in pipelines:
                capped = fn is sequential and a.sequential_cap is not None and a.sequential_cap < size
                n = a.sequential_cap if capped else size
                r = measure(srv, fn, ctx, circuit, values[:n], exact[:n], 1 if fn is sequential else a.repeat)
                if capped:  # linear in circuits by construction: every circuit is its own job
                    r.update(measured_circuits=n, wall_s=r['wall_s'] * size / n, min_s=r['min_s'] * size / n,
                             requests=round(r['requests'] * size / n))
                rows.append({'pipeline': name, 'circuits': size, **r, 'requests_per_circuit': r['requests'] / size,
                             'note': f'EXTRAPOLATED from {n} circuits' if capped else ''})
                print(f"  {name:42s} {size:4d} circuits: {r['wall_s']:7.2f} s, {r['requests']:5d} requests",
                      file=sys.stderr, flush=True)
        client.close()
    cols = [('pipeline', 'pipeline', '{}'), ('circuits', 'circuits', '{}'), ('wall_s', 'wall s', '{:.2f}'),
            ('requests', 'HTTP requests', '{}'), ('requests_per_circuit', 'req/circuit', '{:.2f}'),
            ('max_tvd', 'max TVD vs exact', '{:.3f}'), ('runs', 'timed runs', '{}'), ('note', 'note', '{}')]
    print(f"\nIonQ emulator: {LATENCY * 1e3:.0f} ms latency per request, "
          f"{EXECUTION * 1e3:.0f} ms execution per circuit; "
          f"{QUBITS}-qubit hardware-efficient model, {LAYERS} layers, {SHOTS} shots; wall time = median of runs\n")
    print_table(rows, cols)
    write_json(a.out, {'benchmark': 'ionq_pipeline', 'machine': machine_info(),
                       'setup': {'latency_s': LATENCY, 'execution_s_per_circuit': EXECUTION, 'shots': SHOTS,
                                 'qubits': QUBITS,
                                 'layers': LAYERS, 'poll_s': POLL,
                                 'qstore_poll': 'predicted completion, then 0.05 s x1.5 up to 0.5 s',
                                 'cirq_run_batch_poll_s': 1, 'qiskit_default_wait_s': 5},
                       'rows': rows})
    print(f"\nwrote {a.out}")
    return 0


if __name__ == '__main__':
    sys.exit(main())
