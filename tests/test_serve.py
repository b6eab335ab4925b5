"`qstore serve` end to end: the real server (uvicorn workers in subprocesses) on a free loopback port."
import asyncio, json, os, re, signal, subprocess, sys, threading, time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest

from qstore.ml.datasets import build_model, load_data, minmax_to_angles
from qstore.ml.inference import predict
from qstore.ml.trainer import QuantumTrainer, TrainingConfig
from qstore.storage.db import Database

QSTORE = Path(sys.executable).parent / 'qstore'  # the console script installed with the package


@pytest.fixture(scope='module')
def home(tmp_path_factory):
    "A SQLite home with `iris` v1 in production: a 4-feature cross_entropy classifier, trained for two epochs."
    home = tmp_path_factory.mktemp('serve-home')
    X, y, _ = load_data('iris')
    Xs, = minmax_to_angles(X)
    cfg = TrainingConfig(epochs=2, batch_size=25, learning_rate=0.2, loss='cross_entropy', register_model='iris',
                         seed=0, progress=False)
    with Database.open(home) as db:
        QuantumTrainer(build_model({'head': 'affine', 'n_outputs': 1}, 4), cfg, db=db).fit((Xs, y))
        db.models.promote('iris', 1, 'production')
    return home, Xs, y


def start_server(home, *args):
    "Start `qstore serve` on a free port; returns (process, url) once /health answers."
    proc = subprocess.Popen([str(QSTORE), 'serve', '--home', str(home), '--port', '0', *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    found = re.search(r'http://\S+', line)
    if not found:
        proc.kill()
        raise AssertionError(f"qstore serve did not start: {line!r} {proc.stderr.read()}")
    url = found.group()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f'{url}/health', timeout=5).status_code == 200: return proc, url
        except httpx.TransportError: time.sleep(0.05)
    proc.kill()
    raise AssertionError('qstore serve did not answer /health within 60 s')


def stop_server(proc):
    proc.send_signal(signal.SIGINT)
    try: return proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise


@pytest.fixture(scope='module')
def server(home):
    "Two workers serving iris@production, checking the registry every 0.2 s, batches waiting up to 20 ms."
    proc, url = start_server(home[0], '--model', 'iris@production', '--workers', '2', '--poll', '0.2',
                             '--max-wait-ms', '20')
    yield url
    assert stop_server(proc) == 0


def metric(text, name):
    "The value of one sample line in Prometheus text (0 when absent)."
    found = re.search(rf'^{re.escape(name)} (\S+)$', text, re.M)
    return float(found.group(1)) if found else 0.0


def test_predictions_are_the_inference_paths(server, home):
    h, Xs, y = home
    r = httpx.post(f'{server}/predict', json={'rows': Xs[::10].tolist()})
    assert r.status_code == 200, r.text
    got, want = r.json(), predict('iris@production', Xs[::10], home=h)
    assert (got['model'], got['version']) == ('iris', 1)
    assert got['predictions'] == want.predictions.tolist()
    np.testing.assert_allclose(got['probabilities'], want.probabilities, rtol=1e-12)
    np.testing.assert_allclose(got['outputs'], want.outputs, rtol=1e-12)
    assert np.mean(np.array(got['predictions']) == y[::10]) > 0.8  # a trained classifier, not noise


@pytest.mark.parametrize('body, status, message', [
    (json.dumps({'rows': [[0.1, 0.2, 0.3]]}), 422, "each row needs 4 features (model 'iris'), got 3"),
    ('{"rows": [[0.1, NaN, 0.3, 0.4]]}', 422, 'row 0 feature 1 is nan; features must be finite'),
    ('[[0.1, 0.2, 0.3, "x"]]', 422, 'rows must hold numbers only'),
    ('{"rows": [[0.1, 0.2', 400, 'body is not JSON'),
    ('', 400, 'empty request body'),
    (json.dumps({'data': [[1, 2, 3, 4]]}), 400, "expected an object with one key 'rows'"),
])
def test_bad_input_gets_4xx_with_a_message(server, body, status, message):
    r = httpx.post(f'{server}/predict', content=body.encode())
    assert r.status_code == status, r.text
    assert message in r.json()['error']


def test_body_over_10_mb_is_refused(server):
    body = b'[' + b'0,' * (5 * 2**20) + b'0]'
    r = httpx.post(f'{server}/predict', content=body, timeout=30)
    assert r.status_code == 413
    assert r.json()['error'] == f'request body of {len(body)} bytes is over the limit of {10 * 2**20} bytes'
    chunks = (b'[' + b'0,' * 2**20 for _ in range(6))  # no Content-Length: refused while it streams in
    r = httpx.post(f'{server}/predict', content=chunks, timeout=30)
    assert (r.status_code, r.json()['error']) == (413, f'request body is over the limit of {10 * 2**20} bytes')


def test_unknown_model_or_home_is_one_line(home, tmp_path):
    r = subprocess.run([str(QSTORE), 'serve', '--model', 'nope', '--home', str(home[0])], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 1 and r.stderr == "qstore serve: no model named 'nope'; models: ['iris']\n", r.stderr
    r = subprocess.run([str(QSTORE), 'serve', '--model', 'iris', '--home', str(tmp_path / 'typo')],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and r.stderr.startswith('qstore serve: no qstore database at'), r.stderr
    assert len(r.stderr.splitlines()) == 1


def test_concurrent_requests_are_micro_batched(server, home):
    before = httpx.get(f'{server}/metrics').text
    rows, ready = home[1][:32].tolist(), threading.Barrier(32)
    def post(row):  # each client connects first, then all send at once: 32 requests really in flight together
        with httpx.Client(timeout=30) as session:
            session.get(f'{server}/health')
            ready.wait()
            return session.post(f'{server}/predict', json=[row])
    with ThreadPoolExecutor(32) as pool: answers = list(pool.map(post, rows))
    assert all(a.status_code == 200 for a in answers)
    after = httpx.get(f'{server}/metrics').text
    calls = metric(after, 'qstore_serve_batch_requests_count') - metric(before, 'qstore_serve_batch_requests_count')
    merged = metric(after, 'qstore_serve_batch_requests_sum') - metric(before, 'qstore_serve_batch_requests_sum')
    assert merged == 32  # every request ran in exactly one simulator call, both workers' counts added up
    assert calls < 32, f"32 concurrent requests took {calls} simulator calls"
    ok = 'qstore_serve_requests_total{code="200"}'
    assert metric(after, ok) - metric(before, ok) == 32
    assert '# TYPE qstore_serve_request_seconds histogram' in after


def test_promotion_is_picked_up_without_restart(server, home):
    h, Xs, _ = home
    with Database.open(h) as db:
        v1 = db.models.get('iris', 1)
        v2 = db.models.register('iris', v1.spec, v1.checkpoint)
        db.models.promote('iris', v2, 'production')
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        answers = [httpx.post(f'{server}/predict', json=Xs[:1].tolist()).json() for _ in range(8)]
        if {a['version'] for a in answers} == {v2}: break
        time.sleep(0.1)
    assert {a['version'] for a in answers} == {v2}
    with Database.open(h) as db: db.models.promote('iris', 1, 'production')  # back, for the other tests


def _requests(url, n, X):
    "n one-row requests at once (threads); returns their futures."
    pool = ThreadPoolExecutor(n)
    futures = [pool.submit(httpx.post, f'{url}/predict', json=X[i:i + 1].tolist(), timeout=60) for i in range(n)]
    pool.shutdown(wait=False)
    return futures


def _health_until(url, ready, seconds=30):
    "/health once `ready(answer)` holds (polled), else AssertionError with the last answer."
    deadline, answer = time.monotonic() + seconds, None
    while time.monotonic() < deadline:
        try: answer = httpx.get(f'{url}/health', timeout=5).json()
        except httpx.TransportError: pass
        if answer and ready(answer): return answer
        time.sleep(0.05)
    raise AssertionError(f"/health did not reach the expected state within {seconds} s: {answer}")


def _pids(health) -> set:
    return {w['pid'] for w in health['workers'] if w['ready']}


def _gone(pid) -> bool:
    "The process exited (or is a zombie waiting for its reaper)."
    try: return 'State:\tZ' in Path(f'/proc/{pid}/status').read_text()
    except FileNotFoundError: return True


def test_killed_worker_loses_no_request_under_load(home):
    "8 clients x 50 requests on 2 workers; one worker is SIGKILLed while it holds requests: all 400 are answered."
    h, X, _ = home
    proc, url = start_server(h, '--model', 'iris:1', '--workers', '2', '--poll', '0')
    try:
        before = _health_until(url, lambda a: len(_pids(a)) == 2)
        victim = before['workers'][0]['pid']
        answers, done = [None] * 400, [0]
        def client(c):
            with httpx.Client(timeout=60) as session:
                for i in range(c * 50, c * 50 + 50):
                    answers[i] = session.post(f'{url}/predict', json=X[i % len(X)][None].tolist())
                    done[0] += 1
        with ThreadPoolExecutor(8) as pool:
            clients = [pool.submit(client, c) for c in range(8)]
            while done[0] < 80: time.sleep(0.005)
            _health_until(url, lambda a: any(w['pid'] == victim and w['in_flight'] for w in a['workers']), 10)
            os.kill(victim, signal.SIGKILL)  # it holds at least one request (and likely more) right now
            for f in clients: f.result()
        assert done[0] == 400 and [a.status_code for a in answers] == [200] * 400
        want = predict('iris:1', X[np.arange(400) % len(X)], home=h)
        assert [a.json()['predictions'][0] for a in answers] == want.predictions.tolist()
        np.testing.assert_allclose([a.json()['probabilities'][0] for a in answers], want.probabilities, rtol=0,
                                   atol=1e-12)
        np.testing.assert_allclose([a.json()['outputs'][0] for a in answers], want.outputs, rtol=0, atol=1e-12)
        after = _health_until(url, lambda a: len(_pids(a)) == 2 and a['restarts'] == 1)
        assert victim not in _pids(after) and _gone(victim)
        text = httpx.get(f'{url}/metrics').text
        assert metric(text, 'qstore_serve_retries_total') >= 1  # the victim's requests were sent again
        assert metric(text, 'qstore_serve_worker_restarts_total') == 1
    finally: assert stop_server(proc) == 0


def test_only_worker_killed_or_stopped_its_requests_wait_for_the_restart(home):
    """One worker: SIGKILL while it holds 8 requests, then SIGTERM under 8 more: all 16 are answered.
    A killed front's worker exits by itself."""
    h, X, _ = home
    proc, url = start_server(h, '--model', 'iris:1', '--workers', '1', '--poll', '0')
    want = predict('iris:1', X[:8], home=h).predictions.tolist()
    try:
        pid = _pids(_health_until(url, lambda a: len(_pids(a)) == 1)).pop()
        os.kill(pid, signal.SIGSTOP)  # it accepts (the kernel queues) but answers nothing: it holds what it gets
        futures = _requests(url, 8, X)
        time.sleep(1)
        os.kill(pid, signal.SIGKILL)
        assert [f.result().status_code for f in futures] == [200] * 8
        assert [f.result().json()['predictions'][0] for f in futures] == want
        assert metric(httpx.get(f'{url}/metrics').text, 'qstore_serve_retries_total') >= 8
        pid = _pids(_health_until(url, lambda a: len(_pids(a)) == 1 and a['restarts'] == 1)).pop()
        futures = _requests(url, 8, X)
        os.kill(pid, signal.SIGTERM)  # answers what it holds, exits; the rest wait for the next worker
        assert [f.result().json()['predictions'][0] for f in futures] == want
        worker = _pids(_health_until(url, lambda a: len(_pids(a)) == 1 and a['restarts'] == 2)).pop()
    except BaseException:
        stop_server(proc)
        raise
    proc.kill()  # the front dies without stopping its worker: the worker notices and exits by itself
    proc.wait(10)
    deadline = time.monotonic() + 20
    while not _gone(worker) and time.monotonic() < deadline: time.sleep(0.1)
    assert _gone(worker), f"worker {worker} outlived its front"


def test_bench_load_generator(server, home):
    "bench/serve.py's client: keep-alive HTTP/1.1 requests, answers counted, bounded by count and time."
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / 'bench'))
    try: import serve as bench_serve
    finally: sys.path.pop(0)
    r = asyncio.run(bench_serve.load(server, home[1][:8].tolist(), clients=4, requests=40, seconds=10))
    assert (r['requests'], r['errors']) == (40, 0) and r['rps'] > 0 and r['p50_ms'] <= r['p99_ms']
    sockets = bench_serve.worker_sockets(httpx.get(f'{server}/health').json())  # the direct route, past the front
    assert len(sockets) == 2 and all(Path(s).is_socket() for s in sockets)
    r = asyncio.run(bench_serve.load(server, home[1][:8].tolist(), clients=4, requests=40, seconds=10, sockets=sockets))
    assert (r['requests'], r['errors']) == (40, 0)
