"""Black-box tests of the IonQ API v0.4 emulator (qstore.ionq.emulator) over real HTTP on 127.0.0.1.

Covers the emulator test vectors of the IonQ reference notes (section 2.4), the official cirq-ionq and
qiskit-ionq clients used unchanged, auth, validation, pagination, cancel/delete, estimates and fault injection.
"""
import asyncio, json, logging, os, socket, subprocess, sys, time, warnings

import httpx
import numpy as np
import pytest

from qstore.circuits import Circuit
from qstore.ionq.emulator import EmulatorConfig, EmulatorServer, create_app
from qstore.ionq.serialize import results_to_array, to_ionq_json_batch
from qstore.simulator import DensityMatrixSimulator, NoiseModel, StatevectorSimulator

KEY = 'test-key'
AUTH = {'Authorization': f'apiKey {KEY}'}
BELL = {'gateset': 'qis', 'qubits': 2,
        'circuit': [{'gate': 'h', 'target': 0}, {'gate': 'cnot', 'control': 0, 'target': 1}]}


@pytest.fixture(scope='module')
def shared():
    "One server for tests that do not change its config (cirq-ionq's Forte CNOT needs max_phase=None)."
    with EmulatorServer(EmulatorConfig(max_phase=None)) as srv: yield srv


@pytest.fixture
def srv():
    "A fresh server per test, for tests that change the config or read counters."
    with EmulatorServer() as s: yield s


@pytest.fixture
def http(srv):
    with httpx.Client(base_url=srv.base_url, headers=AUTH, timeout=10) as c: yield c


def job_body(circuit=BELL, backend='simulator', **kw):
    return {'type': 'ionq.circuit.v1', 'backend': backend, 'shots': 100, 'input': circuit, **kw}


def close_to(freq, p, shots, z=5):
    "Empirical frequencies within z binomial standard errors (+ a little slack) of probabilities p."
    return bool(np.all(np.abs(freq - p) <= z * np.sqrt(p * (1 - p) / shots) + 2e-3))


def big_endian(p, n):
    "Reorder a little-endian (2^n,) probability vector to cirq's big-endian order."
    return p.reshape((2,) * n).transpose(tuple(reversed(range(n)))).reshape(-1)


# ---------------------------------------------------------------- reference test vectors (section 2.4)
def gate(name, q, phase): return {'gate': name, 'target': q, 'phase': phase}
ARIA_CNOT = [gate('gpi2', 0, 0.25), {'gate': 'ms', 'targets': [0, 1], 'phases': [0, 0]}, gate('gpi2', 1, 0.5),
             gate('gpi2', 0, 0.5), gate('gpi2', 0, -0.25)]
FORTE_CNOT = [gate('gpi2', 1, 0), gate('gpi', 1, -1 / 8), gate('gpi2', 1, 0.5),
              {'gate': 'zz', 'targets': [0, 1], 'angle': 0.25},
              gate('gpi2', 0, 0.75), gate('gpi', 0, 1 / 8), gate('gpi2', 0, 0.5), gate('gpi2', 1, 1.25),
              gate('gpi', 1, 0.5),
              gate('gpi2', 1, 0.5)]
HH = [gate('gpi2', 0, 0.25), gate('gpi', 0, 0), gate('gpi2', 1, 0.25), gate('gpi', 1, 0)]
MS_ORDER = lambda ts: [gate('gpi2', 1, 0), {'gate': 'ms', 'targets': ts, 'phases': [0.25, 0], 'angle': 0.25},
                       gate('gpi2', 0, 0)]
VECTORS = [
    ('qis', [{'gate': 'x', 'targets': [0]}], {'1': 1}),
    ('qis', [{'gate': 'x', 'targets': [1]}], {'2': 1}),
    ('qis', BELL['circuit'], {'0': 0.5, '3': 0.5}),
    ('native', [gate('gpi', 0, 0)], {'1': 1}),
    ('native', [gate('gpi2', 0, 0)], {'0': 0.5, '1': 0.5}),
    ('native', [{'gate': 'ms', 'targets': [0, 1], 'phases': [0, 0]}], {'0': 0.5, '3': 0.5}),
    ('native', [{'gate': 'ms', 'targets': [0, 1], 'phases': [0, 0], 'angle': 0.1}], {'0': 0.904508, '3': 0.095492}),
    ('native', [gate('gpi', 0, 0)] + ARIA_CNOT, {'3': 1}),
    ('native', [gate('gpi', 1, 0)] + ARIA_CNOT, {'2': 1}),
    ('native', [gate('gpi', 0, 0)] + FORTE_CNOT, {'3': 1}),
    ('native', HH + [{'gate': 'zz', 'targets': [0, 1], 'angle': 0.25}] + HH, {'0': 0.5, '3': 0.5}),
    ('native', HH + [{'gate': 'zz', 'targets': [0, 1], 'angle': 0.1}] + HH, {'0': 0.904508, '3': 0.095492}),
    ('native', MS_ORDER([0, 1]), {'1': 0.5, '2': 0.5}),
    ('native', MS_ORDER([1, 0]), {'0': 0.5, '2': 0.5}),
]


@pytest.mark.parametrize('gateset,gates,want', VECTORS)
def test_reference_vectors(shared, gateset, gates, want):
    with httpx.Client(base_url=shared.base_url, headers=AUTH) as http:
        jid = http.post('/jobs', json=job_body({'gateset': gateset, 'qubits': 2, 'circuit': gates})).json()['id']
        got = http.get(f'/jobs/{jid}/results/probabilities').json()
    assert set(got) == set(want)
    np.testing.assert_allclose(results_to_array(got, 2), results_to_array(want, 2), atol=1e-6)


def test_in_process_asgi_transport():
    "create_app works without a socket through httpx.ASGITransport; a dropped connection raises in-process."
    app = create_app(EmulatorConfig(seed=3))
    async def go():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url='http://emulator/v0.4',
                                     headers=AUTH) as c:
            jid = (await c.post('/jobs', json=job_body())).json()['id']
            job = (await c.get(f'/jobs/{jid}')).json()
            probs = (await c.get(f'/jobs/{jid}/results/probabilities')).json()
            app.config.drop_rate = 1.0
            with pytest.raises(ConnectionResetError): await c.post('/jobs', json=job_body())
            return job, probs
    job, probs = asyncio.run(go())
    assert job['status'] == 'completed' and job['stats'] == {'qubits': 2, 'circuits': 1,
                                                             'gate_counts': {'1q': 1, '2q': 1}}
    np.testing.assert_allclose(results_to_array(probs, 2), [0.5, 0, 0, 0.5])
    assert app.stats()['jobs_created'] == 2 and app.stats()['faults'] == {'drop': 1}


def test_batch_serialised_template_matches_simulator(srv, http):
    """A template bound to 40 rows with to_ionq_json_batch runs as one multi-circuit job; results equal the local
    simulator."""
    c = Circuit(3)
    w = c.parameters_vector('w', 6)
    for q in range(3): c.ry(q, w[q])
    c.cnot(0, 1).cnot(1, 2)
    for q in range(3): c.rz(q, w[3 + q]).rx(q, 0.5 * w[q] + 0.1)
    V = np.random.default_rng(0).uniform(-np.pi, np.pi, (40, 6))
    circuits = to_ionq_json_batch(c, V)
    body = {'type': 'ionq.multi-circuit.v1', 'backend': 'simulator', 'shots': 100,
            'input': {'gateset': 'qis', 'qubits': 3, 'circuits': [{'circuit': x['circuit']} for x in circuits]}}
    jid = http.post('/jobs', json=body).json()['id']
    job = http.get(f'/jobs/{jid}').json()
    agg = http.get(f'/jobs/{jid}/results/probabilities/aggregated').json()
    assert list(agg) == job['child_job_ids'] and len(agg) == 40 and job['stats']['circuits'] == 40
    assert http.get(f'/jobs/{jid}/results/probabilities').json() == agg  # the parent's own endpoint aggregates too
    got = np.stack([results_to_array(agg[k], 3) for k in job['child_job_ids']])
    np.testing.assert_allclose(got, StatevectorSimulator().probabilities(c, V), atol=1e-12)
    child = http.get(f"/jobs/{job['child_job_ids'][5]}").json()
    assert (child['parent_job_id'], child['type'], child['status']) == (jid, 'ionq.circuit.v1', 'completed')
    assert srv.stats()['circuits_executed'] == {k: 1 for k in job['child_job_ids']}


def test_noisy_simulator_and_qpu(srv, http):
    "Noise models and qpu targets sample the density-matrix simulation with the job's seed."
    body = job_body(backend='simulator', shots=4000, noise={'model': 'aria-1', 'seed': 7})
    ids = [http.post('/jobs', json=b).json()['id'] for b in (body, body,
                                                             dict(body, noise={'model': 'aria-1', 'seed': 8}))]
    p = [results_to_array(http.get(f'/jobs/{j}/results/probabilities').json(), 2) for j in ids]
    counts = results_to_array(http.get(f'/jobs/{ids[0]}/results/histogram').json(), 2, int)
    shots = http.get(f'/jobs/{ids[0]}/results/shots').json()
    assert counts.sum() == 4000 and np.array_equal(np.bincount([int(s) for s in shots], minlength=4), counts)
    np.testing.assert_array_equal(p[0], counts / 4000)  # empirical probabilities
    assert np.array_equal(p[0], p[1]) and not np.array_equal(p[0], p[2])  # seeded
    exact = DensityMatrixSimulator(NoiseModel.preset('aria-1')).probabilities(Circuit(2).h(0).cnot(0, 1))[0]
    assert exact[1] > 1e-3 and close_to(p[0], exact, 4000)  # noise puts weight on |01>, |10>
    srv.config.qpu_queue_time = 0.3
    jid = http.post('/jobs', json=job_body(backend='qpu.forte-1', shots=2000)).json()['id']
    assert http.get(f'/jobs/{jid}').json()['status'] == 'ready'
    time.sleep(0.35)
    q = results_to_array(http.get(f'/jobs/{jid}/results/probabilities').json(), 2)
    forte = DensityMatrixSimulator(NoiseModel.preset('forte-1')).probabilities(Circuit(2).h(0).cnot(0, 1))[0]
    assert close_to(q, forte, 2000)


# ---------------------------------------------------------------- the official cirq-ionq client, unchanged
def test_cirq_ionq_run_and_batch(shared):
    cirq = pytest.importorskip('cirq')
    cirq_ionq = pytest.importorskip('cirq_ionq')
    service = cirq_ionq.Service(remote_host=shared.url, api_key=KEY, default_target='simulator', max_retry_seconds=1)
    q = cirq.LineQubit.range(3)
    c1 = cirq.Circuit(cirq.H(q[0]), cirq.CNOT(q[0], q[1]), cirq.rx(0.7).on(q[2]), cirq.measure(*q, key='m'))
    ref1 = Circuit(3).h(0).cnot(0, 1).rx(2, 0.7)
    job = service.create_job(c1, repetitions=1000)
    probs = job.results().probabilities()  # cirq's big-endian keys
    want = big_endian(StatevectorSimulator().probabilities(ref1)[0], 3)
    np.testing.assert_allclose([probs.get(i, 0.0) for i in range(8)], want, atol=1e-12)

    res = service.run(c1, repetitions=3000, seed=11)
    hist = res.histogram(key='m')
    assert close_to(np.array([hist.get(i, 0) for i in range(8)]) / 3000, want, 3000)

    c2 = cirq.Circuit(cirq.X(q[1]), cirq.ry(1.1).on(q[0]), cirq.measure(q[0], q[1], key='m'))
    ref2 = Circuit(2).x(1).ry(0, 1.1)
    r1, r2 = service.run_batch([c1, c2], repetitions=2000, seed=3)
    for r, ref, n in ((r1, ref1, 3), (r2, ref2, 2)):
        h = r.histogram(key='m')
        assert close_to(np.array([h.get(i, 0) for i in range(2 ** n)]) / 2000,
                        big_endian(StatevectorSimulator().probabilities(ref)[0], n), 2000)


def test_cirq_ionq_qpu_noise_native_and_listing(shared):
    cirq = pytest.importorskip('cirq')
    cirq_ionq = pytest.importorskip('cirq_ionq')
    from cirq_ionq.ionq_native_gates import GPI2Gate, MSGate
    service = cirq_ionq.Service(remote_host=shared.url, api_key=KEY, max_retry_seconds=1)
    q = cirq.LineQubit.range(2)
    native = cirq.Circuit(GPI2Gate(phi=0.25).on(q[1]), MSGate(phi0=0.1, phi1=0.3, theta=0.2).on(*q),
                          cirq.measure(*q, key='m'))
    ref = Circuit(2).gpi2(1, 0.25).ms(0, 1, 0.1, 0.3, 0.2)
    res = service.run(native, repetitions=2000, target='qpu.aria-1')  # QPUResult: counts = round(p * shots)
    h = res.histogram(key='m')
    exact = DensityMatrixSimulator(NoiseModel.preset('aria-1')).probabilities(ref)[0]
    assert sum(h.values()) == 2000 and close_to(np.array([h.get(i, 0) for i in range(4)]) / 2000, big_endian(exact, 2),
                                                2000)
    # cirq sends limit as a JSON body on GET and stops when 'next' is absent
    jobs = service.list_jobs(limit=5, batch_size=2)
    ids = [j.job_id() for j in jobs]
    assert len(ids) == 5 == len(set(ids))


# ---------------------------------------------------------------- the official qiskit-ionq client, unchanged
@pytest.fixture
def qiskit_provider(shared, monkeypatch):
    qiskit_ionq = pytest.importorskip('qiskit_ionq')
    for k in ('QISKIT_IONQ_API_URL', 'QISKIT_IONQ_API_TOKEN', 'IONQ_API_KEY', 'IONQ_API_TOKEN'):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv('IONQ_API_URL', shared.base_url)  # qiskit-ionq reads backend qubit counts from here
    # a stray .env file would win over os.environ inside qiskit-ionq; isolate the test from it
    monkeypatch.setattr(qiskit_ionq.helpers, 'dotenv_values', lambda *a, **k: {})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        provider = qiskit_ionq.IonQProvider(token=KEY, url=shared.base_url)
        backend = provider.get_backend('ionq_simulator')
    assert not [w for w in caught if 'Failed to get qubits' in str(w.message)]
    assert backend.num_qubits == 20  # the emulator's ideal width limit, read from GET /backends/simulator
    return provider


def qiskit_counts_to_array(counts, n):
    "Qiskit counts (clbit c = qubit c here) to a (2^n,) little-endian array."
    out = np.zeros(2 ** n)
    for k, v in counts.items(): out[int(k.replace(' ', ''), 2)] += v
    return out


def test_qiskit_ionq_single_and_multi(qiskit_provider):
    from qiskit import QuantumCircuit
    backend = qiskit_provider.get_backend('ionq_simulator')
    qc = QuantumCircuit(3, 3)
    qc.h(0)
    qc.cx(0, 1)
    qc.ry(0.9, 2)
    qc.measure([0, 1, 2], [0, 1, 2])
    want = StatevectorSimulator().probabilities(Circuit(3).h(0).cnot(0, 1).ry(2, 0.9))[0]
    t0 = time.monotonic()
    job = backend.run(qc, shots=4000, sampler_seed=5)
    res = job.result()
    assert time.monotonic() - t0 < 3  # completed before the first poll: no 5 s wait
    assert close_to(qiskit_counts_to_array(res.get_counts(), 3) / 4000, want, 4000)
    probs = res.get_probabilities()  # the probabilities the emulator returned
    np.testing.assert_allclose(qiskit_counts_to_array(probs, 3), want, atol=1e-12)

    qc2 = QuantumCircuit(2, 2)
    qc2.x(1)
    qc2.rx(0.4, 0)
    qc2.measure([0, 1], [0, 1])
    want2 = StatevectorSimulator().probabilities(Circuit(2).x(1).rx(0, 0.4))[0]
    res = backend.run([qc, qc2], shots=3000, sampler_seed=2).result()
    assert close_to(qiskit_counts_to_array(res.get_counts(0), 3) / 3000, want, 3000)
    assert close_to(qiskit_counts_to_array(res.get_counts(1), 2) / 3000, want2, 3000)


def test_qiskit_ionq_noise_memory_and_polling(qiskit_provider, shared):
    from qiskit import QuantumCircuit
    backend = qiskit_provider.get_backend('ionq_simulator')
    backend.set_options(noise_model='aria-1')  # qiskit-ionq fetches memory only when the *backend* option is non-ideal
    qc = QuantumCircuit(2, 2)
    qc.h(0)
    qc.cx(0, 1)
    qc.measure([0, 1], [0, 1])
    job = backend.run(qc, shots=1000, memory=True)
    res = job.result()
    memory = res.get_memory()
    assert len(memory) == 1000
    counts = qiskit_counts_to_array(res.get_counts(), 2)
    np.testing.assert_array_equal(counts, qiskit_counts_to_array({m: memory.count(m) for m in set(memory)}, 2))
    exact = DensityMatrixSimulator(NoiseModel.preset('aria-1')).probabilities(Circuit(2).h(0).cnot(0, 1))[0]
    assert close_to(counts / 1000, exact, 1000)
    shared.config.execution_time = 0.3
    try:
        job = backend.run(qc, shots=100)
        assert job.status().name in ('RUNNING', 'QUEUED', 'INITIALIZING')
        res = job.result(wait=0.1)  # polls until completed
        assert sum(res.get_counts().values()) == 100
    finally:
        shared.config.execution_time = 0.0


# ---------------------------------------------------------------- auth, validation, listing, cancel, delete, estimate
def test_auth(srv):
    body = httpx.get(srv.base_url + '/jobs').json()
    assert body['statusCode'] == 401
    assert body['error'] == 'Unauthorized Error'
    assert body['message'].startswith('Invalid key provided')
    assert httpx.get(srv.base_url + '/jobs', headers={'Authorization': 'Bearer x'}).status_code == 401
    assert httpx.get(srv.base_url + '/backends').status_code == 200  # no auth on /backends
    srv.config.api_keys = ['right']
    assert httpx.get(srv.base_url + '/jobs', headers=AUTH).status_code == 401
    assert httpx.get(srv.base_url + '/jobs', headers={'Authorization': 'apiKey right'}).status_code == 200
    assert 'right' not in repr(srv.config)


def test_backends(http):
    names = [b['backend'] for b in http.get('/backends').json()]
    assert names[0] == 'simulator' and 'qpu.aria-1' in names and 'qpu.forte-1' in names
    b = http.get('/backends/qpu.forte-1').json()
    assert b['qubits'] == 10 and b['supported_native_gates'] == ['gpi', 'gpi2', 'zz'] and b['status'] == 'available'
    assert http.get('/backends/qpu.qpu').json()['backend'] == 'qpu.aria-1'  # qiskit-ionq's generic 'ionq_qpu'
    assert http.get('/backends/nope').status_code == 404
    ch = http.get('/backends/qpu.aria-1/characterizations', params={'limit': 1}).json()['characterizations'][0]
    assert ch['fidelity']['2q']['median'] == 0.986 and [0, 9] in ch['connectivity']


@pytest.mark.parametrize('body,status,fragment', [
    (job_body({'qubits': 2, 'circuit': [{'gate': 'foo', 'target': 0}]}), 400, "(gate 'foo'): unknown QIS gate"),
    (job_body({'qubits': 2, 'circuit': [{'gate': 'h', 'target': 2}]}), 400,
     'qubit 2 out of range for a 2-qubit circuit'),
    (job_body({'gateset': 'qis', 'qubits': 2,
               'circuit': [{'gate': 'h', 'target': 0}, {'gate': 'gpi', 'target': 0, 'phase': 0}]}),
     400, 'QIS and native gates cannot be mixed'),
    (job_body({'gateset': 'native', 'qubits': 2, 'circuit': [{'gate': 'gpi', 'target': 0, 'phase': 1.5}]}), 400,
     "'phase' = 1.5 is out of range [-1, 1]"),
    (job_body({'gateset': 'native', 'qubits': 2, 'circuit': [{'gate': 'ms', 'targets': [0, 1], 'phases': [0, 0]}]},
              backend='qpu.forte-1'),
     400, "gate types ['ms'] are not supported by backend 'qpu.forte-1'"),
    (job_body(backend='qpu.nowhere'), 400, "unknown backend 'qpu.nowhere'"),
    (job_body(type='ionq.qasm3.v1'), 400, 'not supported by the emulator'),
    (job_body(shots=0), 400, "'shots' must be an integer between 1 and 1000000"),
    (job_body(backend='qpu.aria-1', noise={'model': 'aria-1'}), 400, "'noise' applies only to the 'simulator' backend"),
    (job_body(noise={'model': 'aria-9'}), 400, "unknown noise model 'aria-9'"),
    (job_body({'qubits': 12, 'circuit': [{'gate': 'h', 'target': 0}]}, noise={'model': 'aria-1'}), 400,
     'raise EmulatorConfig.max_noisy_qubits'),
    ({'type': 'ionq.multi-circuit.v1', 'backend': 'simulator', 'input': BELL}, 400,
     'needs input.circuits, not input.circuit'),
    ({'backend': 'simulator'}, 400, "missing 'input'"),
])
def test_validation(http, body, status, fragment):
    r = http.post('/jobs', json=body)
    assert r.status_code == status and r.json()['statusCode'] == status and r.json()['error'] == 'Bad Request'
    assert fragment in r.json()['message'], r.json()['message']


def test_limits(srv, http):
    assert http.post('/jobs', content=b'{not json').json()['message'].startswith('the request body is not valid JSON')
    big = json.dumps(job_body(name='x' * (10 * 2 ** 20 + 1))).encode()  # over IonQ's 10 MB
    r = http.post('/jobs', content=big, headers={'Content-Type': 'application/json'})
    assert r.status_code == 413 and r.json()['error'] == 'Payload Too Large'
    srv.config.max_circuits, srv.config.max_gates = 2, 5
    multi = lambda k, gates: {'type': 'ionq.multi-circuit.v1', 'backend': 'simulator',
                              'input': {'qubits': 2, 'circuits': [{'circuit': gates}] * k}}
    assert '3 circuits in one job; the limit is 2' in http.post('/jobs',
                                                                json=multi(3, BELL['circuit'])).json()['message']
    too_many = http.post('/jobs', json=multi(2, BELL['circuit'] + [BELL['circuit'][0]]))
    assert '6 gates in one job; the limit is 5' in too_many.json()['message']
    assert srv.stats()['jobs_created'] == 0


def test_deep_json_is_a_400_and_a_disconnect_mid_body_logs_no_traceback(srv, http, caplog):
    deep = '{"type": "ionq.circuit.v1", "metadata": ' + '[' * 100_000 + ']' * 100_000 + '}'
    r = http.post('/jobs', content=deep)
    assert r.status_code == 400 and 'nested too deeply' in r.json()['message']
    caplog.set_level(logging.DEBUG)
    with socket.create_connection((srv.host, srv.port)) as s:
        s.sendall(b'POST /v0.4/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: apiKey k\r\n'
                  b'Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"type":')
        while srv.stats()['requests'].get('POST /v0.4/jobs') != 2: time.sleep(0.01)  # the handler is reading
    assert http.get('/jobs').status_code == 200  # served after the disconnect was handled
    for _ in range(100):  # let the abandoned handler finish
        if any(rec.exc_info for rec in caplog.records): break
        time.sleep(0.01)
    assert not [rec for rec in caplog.records if rec.exc_info or rec.levelno >= logging.ERROR]


def test_pagination(http):
    ids = [http.post('/jobs', json=job_body()).json()['id'] for _ in range(7)]
    pages, params = [], {'limit': 3}
    while True:
        page = http.get('/jobs', params=params).json()
        pages.append([j['id'] for j in page['jobs']])
        if 'next' not in page: break  # omitted on the last page
        params = {'limit': 3, 'next': page['next']}
    assert [len(p) for p in pages] == [3, 3, 1] and sum(pages, []) == ids[::-1]  # newest first, no duplicates
    assert len(http.request('GET', '/jobs', json={'limit': 2}).json()['jobs']) == 2  # cirq-ionq's limit in a GET body
    assert http.get('/jobs', params={'status': 'canceled'}).json() == {'jobs': []}
    assert http.get('/jobs', params={'next': 'bogus'}).status_code == 400


def test_listing_runs_each_circuit_once(srv, http):
    "A listing sees parents and children; circuits that became due meanwhile run exactly once."
    srv.config.execution_time = 0.05
    body = {'type': 'ionq.multi-circuit.v1', 'backend': 'simulator',
            'input': {'qubits': 2, 'circuits': [{'circuit': BELL['circuit']}] * 3}}
    jid = http.post('/jobs', json=body).json()['id']
    time.sleep(0.2)
    listed = http.get('/jobs', params={'limit': 10}).json()['jobs']
    assert [j['status'] for j in listed] == ['completed'] * 4  # the parent and its three children
    children = http.get('/jobs', params={'parent_job_id': jid}).json()['jobs']
    assert sorted(j['id'] for j in children) == sorted(http.get(f'/jobs/{jid}').json()['child_job_ids'])
    assert sorted(srv.stats()['circuits_executed'].values()) == [1, 1, 1]


def test_cancel_and_delete(srv, http):
    srv.config.queue_time = 5
    jid = http.post('/jobs', json=job_body()).json()['id']
    assert http.get(f'/jobs/{jid}').json()['status'] == 'ready'
    assert http.put(f'/jobs/{jid}/status/cancel').json() == {'id': jid, 'status': 'canceled'}
    job = http.get(f'/jobs/{jid}').json()
    assert job['status'] == 'canceled' and job['results'] is None and job['started_at'] is None
    assert 'is canceled' in http.get(f'/jobs/{jid}/results/probabilities').json()['message']
    srv.config.queue_time = 0
    done = http.post('/jobs', json=job_body()).json()['id']
    assert 'already completed' in http.put(f'/jobs/{done}/status/cancel').json()['message']
    assert srv.stats()['circuits_executed'] == {done: 1}  # the canceled job never ran
    assert http.delete(f'/jobs/{done}').json() == {'id': done, 'status': 'deleted'}
    assert http.get(f'/jobs/{done}').status_code == 404


def test_status_flow_and_estimate(srv, http):
    srv.config.submit_time, srv.config.queue_time, srv.config.execution_time = 0.1, 0.1, 0.1
    body = {'type': 'ionq.multi-circuit.v1', 'backend': 'simulator',
            'input': {'qubits': 2, 'circuits': [{'circuit': BELL['circuit']}] * 2}}
    jid = http.post('/jobs', json=body).json()['id']
    seen = []
    while not seen or seen[-1] not in ('completed', 'failed'):
        seen.append(http.get(f'/jobs/{jid}').json()['status'])
        time.sleep(0.02)
    changes = [s for i, s in enumerate(seen) if i == 0 or s != seen[i - 1]]
    assert changes == ['submitted', 'ready', 'started', 'completed']
    job = http.get(f'/jobs/{jid}').json()
    assert job['execution_duration_ms'] == 200 and job['started_at'] < job['completed_at']
    est = http.get('/jobs/estimate',
                   params={'backend': 'qpu.aria-1', '1q_gates': 10, '2q_gates': 5, 'qubits': 3, 'shots': 10000}).json()
    assert est['estimated_cost'] == pytest.approx(12.4166 + 10000 * (10 * 0.00022 + 5 * 0.000975))
    assert est['cost_unit'] == 'usd'
    assert est['estimated_execution_time'] == 100 and est['input_values']['shots'] == 10000
    assert http.get('/jobs/estimate',
                    params={'backend': 'simulator', '1q_gates': 1, '2q_gates': 0,
                            'qubits': 2}).json()['estimated_cost'] == 0
    assert http.get('/jobs/estimate', params={'backend': 'qpu.aria-1'}).status_code == 400


# ---------------------------------------------------------------- fault injection, proven by the counters
def test_errors_and_retry_after(srv, http):
    srv.config.error_rate, srv.config.error_codes, srv.config.retry_after, srv.config.seed = 0.5, (429, 502), 1.5, 4
    codes = [http.get('/backends/simulator').status_code for _ in range(40)]
    faults = srv.stats()['faults']
    assert sum(faults.values()) == sum(c != 200 for c in codes) and set(faults) == {'429', '502'}
    assert 8 < sum(faults.values()) < 32  # about half
    srv.config.seed = 5
    other = [http.get('/backends/simulator').status_code for _ in range(40)]
    srv.config.seed = 4  # changing the seed restarts the generator: the same faults again
    assert [http.get('/backends/simulator').status_code for _ in range(40)] == codes != other
    r = next(r for r in (http.get('/jobs') for _ in range(50)) if r.status_code != 200)
    assert r.headers['retry-after'] == '1.5' and r.json()['statusCode'] == r.status_code
    srv.config.error_rate, srv.config.fault_routes = 1.0, ('create_job',)
    assert http.get('/backends').status_code == 200  # only create_job is faulted now
    assert http.post('/jobs', json=job_body()).status_code in (429, 502) and srv.stats()['jobs_created'] == 0


def test_cirq_retries_injected_faults_and_dropped_post(srv):
    cirq = pytest.importorskip('cirq')
    cirq_ionq = pytest.importorskip('cirq_ionq')
    service = cirq_ionq.Service(remote_host=srv.url, api_key=KEY, default_target='simulator', max_retry_seconds=2)
    q = cirq.LineQubit.range(2)
    bell = cirq.Circuit(cirq.H(q[0]), cirq.CNOT(*q), cirq.measure(*q, key='m'))
    srv.config.error_rate, srv.config.error_codes, srv.config.max_faults = 1.0, (503,), 2
    job = service.create_job(bell, repetitions=100)
    st = srv.stats()
    assert st['faults'] == {'503': 2} and st['requests']['POST /v0.4/jobs'] == 3 and st['jobs_created'] == 1
    assert job.results().probabilities() == pytest.approx({0: 0.5, 3: 0.5})
    # a dropped connection after an accepted POST: cirq retries the POST, so the job exists twice
    srv.reset_stats()
    srv.config.error_rate, srv.config.drop_rate, srv.config.max_faults = 0.0, 1.0, 1
    job = service.create_job(bell, repetitions=100)
    st = srv.stats()
    assert st['faults'] == {'drop': 1} and st['jobs_created'] == 2 and st['requests']['POST /v0.4/jobs'] == 2
    assert job.results().probabilities() == pytest.approx({0: 0.5, 3: 0.5})
    assert set(st['circuits_executed'].values()) == {1}  # each created job ran once, none twice


def test_dropped_connection_is_a_transport_error(srv, http):
    srv.config.drop_rate = 1.0
    with pytest.raises(httpx.TransportError):
        http.post('/jobs', json=job_body())
    srv.config.drop_rate = 0.0
    listed = http.get('/jobs').json()['jobs']
    assert len(listed) == 1 and listed[0]['status'] == 'completed'  # the job was created and ran anyway
    assert srv.stats()['faults'] == {'drop': 1}


def test_failed_jobs_and_qiskit_500(srv, monkeypatch):
    cirq = pytest.importorskip('cirq')
    cirq_ionq = pytest.importorskip('cirq_ionq')
    srv.config.fail_rate = 1.0
    service = cirq_ionq.Service(remote_host=srv.url, api_key=KEY, default_target='simulator', max_retry_seconds=1)
    q = cirq.LineQubit.range(2)
    with pytest.raises(RuntimeError, match='Job failed'):
        service.run(cirq.Circuit(cirq.H(q[0]), cirq.measure(*q, key='m')), repetitions=10)
    assert srv.stats()['circuits_executed'] == {}  # a failed job runs nothing
    qiskit_ionq = pytest.importorskip('qiskit_ionq')
    from qiskit import QuantumCircuit
    monkeypatch.setenv('IONQ_API_URL', srv.base_url)
    monkeypatch.setattr(qiskit_ionq.helpers, 'dotenv_values', lambda *a, **k: {})
    backend = qiskit_ionq.IonQProvider(token=KEY, url=srv.base_url).get_backend('ionq_simulator')
    qc = QuantumCircuit(1, 1)
    qc.x(0)
    qc.measure(0, 0)
    with pytest.raises(qiskit_ionq.exceptions.IonQJobFailureError):
        backend.run(qc, shots=10).result()
    # qiskit-ionq retries 502 on GET but treats 500 as fatal
    srv.config.fail_rate, srv.config.error_rate, srv.config.fault_routes = 0.0, 1.0, ('get_job',)
    srv.config.error_codes, srv.config.max_faults = (502,), 1
    assert backend.run(qc, shots=10).result().get_counts() == {'1': 10}
    srv.config.error_codes, srv.config.max_faults = (500,), 2
    with pytest.raises(qiskit_ionq.exceptions.IonQAPIError):
        backend.run(qc, shots=10).result()
    assert srv.stats()['faults'] == {'502': 1, '500': 1}


def test_latency_and_stats_endpoint(srv, http):
    srv.config.latency = 0.2
    t0 = time.monotonic()
    http.get('/backends')
    assert time.monotonic() - t0 >= 0.2
    srv.config.latency = 0
    assert httpx.get(srv.url + '/_emulator/stats').json() == srv.stats()
    assert srv.stats()['requests'] == {'GET /v0.4/backends': 1}


def test_cli_serves(tmp_path):
    code = "from qstore.ionq.emulator import emulator_cli; emulator_cli(['--port', '0', '--latency', '0.05'])"
    proc = subprocess.Popen([sys.executable, '-c', code], stdout=subprocess.PIPE, text=True,
                            env=dict(os.environ, OPENBLAS_NUM_THREADS='1', IONQ_API_KEY='key-from-env-4c1'))
    try:
        lines = [proc.stdout.readline()]
        while 'stats:' not in lines[-1]: lines.append(proc.stdout.readline())
        url = lines[0].split(' at ')[1].split()[0]
        assert url.startswith('http://127.0.0.1:') and url.endswith('/v0.4')
        assert httpx.get(url + '/backends/simulator').json()['qubits'] == 20
        assert 'API key: only the one in IONQ_API_KEY' in ''.join(lines) and 'key-from-env-4c1' not in ''.join(lines)
        assert httpx.get(url + '/jobs', headers={'Authorization': 'apiKey other'}).status_code == 401
        assert httpx.get(url + '/jobs', headers={'Authorization': 'apiKey key-from-env-4c1'}).status_code == 200
    finally:
        proc.terminate()
        proc.wait(timeout=10)
