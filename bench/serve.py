"""Load test of `qstore serve` on loopback: requests/s and p50/p99 latency, micro-batching against one call per request.

    OPENBLAS_NUM_THREADS=1 flock /work/wt/.bench.lock python bench/serve.py [--requests 2000] [--seconds 6]
        [--clients 1 8 64] [--workers 1 2] [--out bench/results/serve.json]

A trained Iris classifier (the `qstore demo` model: 4 qubits, 2 layers, affine head) is registered in a temporary
home and served by the real command (`qstore serve --port 0`, 127.0.0.1 only) with 1 and 2 worker processes, once
with micro-batching (`--max-batch 64 --max-wait-ms 2`) and once with one simulator call per request (`--max-batch 1`).
For each, C concurrent clients (keep-alive HTTP/1.1 connections on asyncio streams, one row per request) send until
`--requests` answers or `--seconds` have passed, whichever comes first, after a warm-up. Requests per simulator call
come from the server's own /metrics. The load generator shares the machine's cores with the server.

Route `front` is the public port: the front relays each request to a worker (and again, if that worker dies).
Route `direct` (batched only) sends the same load to the same workers' unix sockets, client i to worker i mod N,
skipping the front: what the front's hop costs, in requests/s and latency, is the difference.
"""
import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from common import report

from qstore.jobs import DEMO_MODEL
from qstore.ml.datasets import build_model, load_data, minmax_to_angles
from qstore.ml.trainer import QuantumTrainer, TrainingConfig
from qstore.storage.db import Database

QSTORE = Path(sys.executable).parent / 'qstore'
MODES = {'batched': ['--max-batch', '64', '--max-wait-ms', '2'], 'per-request': ['--max-batch', '1']}
COLUMNS = [('workers', 'workers', '{}'), ('mode', 'mode', '{}'), ('route', 'route', '{}'), ('clients', 'clients', '{}'),
           ('requests', 'requests', '{}'), ('rps', 'req/s', '{:.0f}'), ('p50_ms', 'p50 ms', '{:.1f}'),
           ('p99_ms', 'p99 ms', '{:.1f}'), ('requests_per_call', 'req/call', '{:.1f}'),
           ('speedup', 'batched/per-request', '{:.2f}x'), ('front_share', 'front/direct req/s', '{:.2f}'),
           ('errors', 'errors', '{}'), ('load_1m', 'load 1m', '{:.1f}')]


def registered_model(home) -> np.ndarray:
    "Train the demo model for 3 epochs on Iris, register it as `iris` and return the scaled features."
    X, y, _ = load_data('iris')
    Xs, = minmax_to_angles(X)
    cfg = TrainingConfig(epochs=3, batch_size=10, learning_rate=0.1, loss='cross_entropy', register_model='iris',
                         seed=0, progress=False)
    with Database.open(home) as db: QuantumTrainer(build_model(DEMO_MODEL, 4), cfg, db=db).fit((Xs, y))
    return Xs


def start(home, workers: int, mode: str):
    "`qstore serve` on a free loopback port; returns (process, url, the workers' unix sockets) once all are ready."
    proc = subprocess.Popen([str(QSTORE), 'serve', '--model', 'iris', '--home', str(home), '--port', '0',
                             '--workers', str(workers), '--poll', '0', *MODES[mode]], stdout=subprocess.PIPE, text=True)
    url = re.search(r'http://\S+', proc.stdout.readline()).group()
    for _ in range(600):
        try:
            health = httpx.get(f'{url}/health').json()
            if sum(w['ready'] for w in health['workers']) == workers: return proc, url, worker_sockets(health)
        except httpx.TransportError: pass
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError('qstore serve did not start within 30 s')


def worker_sockets(health) -> list[str]:
    "The workers' unix sockets, from their command lines (`--uds PATH`), to load them without the front."
    def uds(pid):
        argv = Path(f'/proc/{pid}/cmdline').read_bytes().decode().split('\0')
        return argv[argv.index('--uds') + 1]
    return [uds(w['pid']) for w in health['workers']]


def calls_and_requests(url) -> tuple:
    "(simulator calls, requests) so far, from /metrics (summed over the workers)."
    text = httpx.get(f'{url}/metrics').text
    def value(name): return float(re.search(rf'^{name} (\S+)$', text, re.M).group(1))
    return value('qstore_serve_batch_requests_count'), value('qstore_serve_batch_requests_sum')


async def _post(reader, writer, path: str, body: bytes) -> tuple:
    "One HTTP/1.1 keep-alive request on an open connection: (status, body)."
    writer.write(b'POST %s HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n'
                 % (path.encode(), len(body)) + body)
    head = await reader.readuntil(b'\r\n\r\n')
    lines = head.split(b'\r\n')
    length = next(int(l.split(b':')[1]) for l in lines if l.lower().startswith(b'content-length:'))
    return int(lines[0].split()[1]), await reader.readexactly(length)


async def load(url, rows, clients: int, requests: int, seconds: float, sockets: list | None = None) -> dict:
    """C clients, one row per request, until `requests` answers or `seconds`; latencies of the answered ones.

    Each client is one keep-alive connection speaking plain HTTP/1.1 on asyncio streams, as `wrk` does: at 64
    connections httpx's AsyncClient spent more time than the server (18 req/s against 1000 here), so it measured
    itself. With `sockets`, client i connects to the unix socket `sockets[i % len(sockets)]` instead of `url`."""
    host, port = url.split('//')[1].rsplit(':', 1)
    bodies = [json.dumps([r]).encode() for r in rows]
    latencies, errors, sent = [], [0], [0]
    async def client(i, deadline, count=True):
        if sockets: reader, writer = await asyncio.open_unix_connection(sockets[i % len(sockets)])
        else: reader, writer = await asyncio.open_connection(host, int(port))
        try:
            while sent[0] < requests and time.perf_counter() < deadline:
                sent[0] += 1
                t = time.perf_counter()
                status, _ = await _post(reader, writer, '/predict', bodies[sent[0] % len(bodies)])
                if status != 200: errors[0] += 1
                elif count: latencies.append(time.perf_counter() - t)
        except (OSError, asyncio.IncompleteReadError): errors[0] += 1
        finally: writer.close()
    await asyncio.gather(*(client(i, time.perf_counter() + 0.5, count=False) for i in range(clients)))  # warm-up
    sent[0] = errors[0] = 0
    t0 = time.perf_counter()
    await asyncio.gather(*(client(i, t0 + seconds) for i in range(clients)))
    wall = time.perf_counter() - t0
    ms = np.array(latencies) * 1000
    return {'requests': len(latencies), 'rps': len(latencies) / wall, 'p50_ms': float(np.percentile(ms, 50)),
            'p99_ms': float(np.percentile(ms, 99)), 'errors': errors[0], 'seconds': wall}


def serve_benchmark(workers=(1, 2), clients=(1, 8, 64), requests: int = 2000, seconds: float = 6.0) -> list[dict]:
    """One row per (workers, mode, route, clients); batched rows through the front carry their speed-up over one call
    per request, and their requests/s as a share of the direct route's."""
    rows = []
    with tempfile.TemporaryDirectory() as home:
        X = registered_model(home).tolist()
        for w in workers:
            for mode in MODES:
                proc, url, sockets = start(home, w, mode)
                try:
                    for c in clients:
                        for route in ('front', 'direct') if mode == 'batched' else ('front',):
                            load_1m = os.getloadavg()[0]
                            calls0, reqs0 = calls_and_requests(url)
                            r = asyncio.run(load(url, X, c, requests, seconds, sockets if route == 'direct' else None))
                            calls1, reqs1 = calls_and_requests(url)
                            rows.append({'workers': w, 'mode': mode, 'route': route, 'clients': c, **r,
                                         'load_1m': load_1m,
                                         'requests_per_call': (reqs1 - reqs0) / max(calls1 - calls0, 1)})
                finally:
                    proc.terminate()
                    proc.wait(30)
    def row(r, mode, route): return next(b for b in rows if (b['workers'], b['clients'], b['mode'], b['route']) ==
                                         (r['workers'], r['clients'], mode, route))
    for r in rows:
        if (r['mode'], r['route']) == ('batched', 'front'):
            r['speedup'] = r['rps'] / row(r, 'per-request', 'front')['rps']
            r['front_share'] = r['rps'] / row(r, 'batched', 'direct')['rps']
    return sorted(rows, key=lambda r: (r['workers'], r['clients'], r['mode'], r['route'] != 'front'))


def main(argv: list[str] | None = None) -> int:
    "Run the load test, print a table and write JSON."
    p = argparse.ArgumentParser(prog='bench/serve.py', description=__doc__.split('\n')[0])
    p.add_argument('--requests', type=int, default=2000, help='answers per cell (at most)')
    p.add_argument('--seconds', type=float, default=6.0, help='seconds per cell (at most)')
    p.add_argument('--clients', type=int, nargs='+', default=[1, 8, 64])
    p.add_argument('--workers', type=int, nargs='+', default=[1, 2])
    p.add_argument('--out', default=str(Path(__file__).parent / 'results' / 'serve.json'))
    a = p.parse_args(argv)
    print(f"load before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    rows = serve_benchmark(a.workers, a.clients, a.requests, a.seconds)
    print(f"load after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}\n")
    fronted = [r for r in rows if 'speedup' in r]
    best = max(fronted, key=lambda r: r['speedup'])
    code = report('serve', rows, COLUMNS, a.out)
    print(f"micro-batching: up to {best['speedup']:.2f}x the requests/s of one call per request "
          f"({best['workers']} worker(s), {best['clients']} clients); median over cells "
          f"{statistics.median(r['speedup'] for r in fronted):.2f}x")
    print(f"the front's hop: {min(r['front_share'] for r in fronted):.2f}-{max(r['front_share'] for r in fronted):.2f}"
          " of the direct route's requests/s")
    return code


if __name__ == '__main__':
    sys.exit(main())
