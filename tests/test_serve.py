"`qstore serve` end to end: the real server (uvicorn workers in subprocesses) on a free loopback port."
import asyncio, json, os, re, signal, socket, subprocess, sys, time
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
    rows = home[1][:32].tolist()
    with ThreadPoolExecutor(32) as pool:
        answers = list(pool.map(lambda row: httpx.post(f'{server}/predict', json=[row], timeout=30), rows))
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
    "n requests at once (threads); returns their futures."
    pool = ThreadPoolExecutor(n)
    futures = [pool.submit(httpx.post, f'{url}/predict', json=X[i:i + 1].tolist(), timeout=30) for i in range(n)]
    pool.shutdown(wait=False)
    return futures


def _start_slow_request(url, row) -> tuple:
    "A request whose body is only partly sent: the worker has accepted it, and its batch waits for it."
    host, port = url.split('//')[1].rsplit(':', 1)
    body = json.dumps([row]).encode()
    sock = socket.create_connection((host, int(port)), timeout=30)
    sock.sendall(b'POST /predict HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n'
                 b'Content-Length: %d\r\n\r\n' % len(body) + body[:5])
    return sock, body[5:]


def _finish_slow_request(sock, rest) -> int:
    "Send the rest of the body; the HTTP status, or 0 when the connection was dropped."
    try:
        sock.sendall(rest)
        head = sock.recv(65536)
    except OSError: return 0
    finally: sock.close()
    return int(head.split()[1]) if head else 0


def _new_pid(url, old, seconds=30):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            pid = httpx.get(f'{url}/health', timeout=5).json()['pid']
            if pid != old: return pid
        except httpx.TransportError: pass
        time.sleep(0.1)
    raise AssertionError(f"no replacement for worker {old} within {seconds} s")


def test_stopped_worker_answers_what_it_accepted_and_is_replaced(home):
    "SIGTERM: the worker drains its accepted requests, exits, and the supervisor starts another one."
    X = home[1]
    proc, url = start_server(home[0], '--model', 'iris@production', '--workers', '1', '--max-wait-ms', '3000',
                             '--poll', '0')
    try:
        pid = httpx.get(f'{url}/health').json()['pid']
        slow = _start_slow_request(url, X[0].tolist())
        time.sleep(0.3)
        futures = _requests(url, 8, X)  # their batch waits (up to 3 s) for the slow request on its way
        time.sleep(0.5)
        os.kill(pid, signal.SIGTERM)
        time.sleep(0.3)
        assert _finish_slow_request(*slow) == 200
        answers = [f.result() for f in futures]
        assert [a.status_code for a in answers] == [200] * 8
        want = predict('iris:1', X[:8], home=home[0]).predictions.tolist()
        assert [a.json()['predictions'][0] for a in answers] == want
        assert _new_pid(url, pid) != pid
        # SIGKILL: what the killed worker held is lost at the TCP level (a transport error, never a wrong answer);
        # the supervisor replaces the worker and a retry of the same (idempotent) request is answered
        pid = httpx.get(f'{url}/health').json()['pid']
        slow = _start_slow_request(url, X[0].tolist())
        time.sleep(0.3)
        futures = _requests(url, 4, X)
        time.sleep(0.5)
        os.kill(pid, signal.SIGKILL)
        assert _finish_slow_request(*slow) == 0
        assert all(isinstance(f.exception(), httpx.TransportError) for f in futures)
        _new_pid(url, pid)
        assert httpx.post(f'{url}/predict', json=X[:1].tolist()).status_code == 200
    finally: assert stop_server(proc) == 0


def test_bench_load_generator(server, home):
    "bench/serve.py's client: keep-alive HTTP/1.1 requests, answers counted, bounded by count and time."
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / 'bench'))
    try: import serve as bench_serve
    finally: sys.path.pop(0)
    r = asyncio.run(bench_serve.load(server, home[1][:8].tolist(), clients=4, requests=40, seconds=10))
    assert (r['requests'], r['errors']) == (40, 0) and r['rps'] > 0 and r['p50_ms'] <= r['p99_ms']
