"""IonQBatchClient and IonQBackend against the IonQ emulator on 127.0.0.1 (offline, seeded, fast)."""
import logging, math
import numpy as np
import pytest
from qstore.backends.base import LocalBackend, get_backend
from qstore.testing import reference_circuit, reference_values
from qstore.circuits import Circuit
from qstore.ionq.client import (IonQAuthError, IonQBatchClient, IonQBatchError, IonQJobFailedError, IonQLimits,
                                IonQRequestError, IonQServerError, IonQTimeoutError)
from qstore.ionq.emulator import EmulatorConfig, EmulatorServer, _HTTPError
from qstore.ionq.serialize import to_ionq_json_batch
from qstore.simulator import StatevectorSimulator
from qstore.pipeline.batch import CircuitBatchManager

KEY = 'ionq-test-key-7f3a9c2e5b'
FAST = dict(backoff_base=0.002, backoff_max=0.05, poll_interval=0.005, poll_max_interval=0.05, rate_limit=2000,
            burst=200, lost_post_settle=0.2)


@pytest.fixture
def emulator():
    with EmulatorServer(EmulatorConfig(api_keys=(KEY,), seed=11)) as srv: yield srv


def client_for(srv, key=KEY, **kw):
    return IonQBatchClient(key, srv.base_url, **(FAST | kw))


def circuits_and_probs(n_rows, n=4, layers=1, seed=0):
    "IonQ JSON for `n_rows` bindings of the reference model, with their exact probabilities."
    c = reference_circuit(n, layers)
    v = reference_values(c, n_rows, seed)
    return to_ionq_json_batch(c, v), StatevectorSimulator().probabilities(c, v)


def posts(srv): return srv.stats()['requests'].get('POST /v0.4/jobs', 0)


def test_fault_injection_batch_completes_once_in_order(emulator):
    """1,000 circuits, 20% 429/502/503 answers on every route and dropped POST connections: all results, in order, each
    run once."""
    payload, exact = circuits_and_probs(1000)
    cfg = emulator.config
    cfg.error_rate, cfg.error_codes, cfg.drop_rate = 0.2, (429, 502, 503), 0.5
    with client_for(emulator, limits=IonQLimits(max_circuits=50), max_retries=12) as client:
        res = client.sync.run_batch(payload, shots=100)
    st = emulator.stats()
    assert st['faults'].get('drop', 0) >= 1 and sum(v for k, v in st['faults'].items() if k != 'drop') >= 10
    assert [r.index for r in res] == list(range(1000))
    # in order: each matches its own circuit
    np.testing.assert_allclose(np.stack([r.probabilities for r in res]), exact, atol=1e-9)
    assert len({r.child_id for r in res}) == 1000
    assert st['jobs_created'] == 20 and st['circuits_submitted'] == 1000  # 20 chunks of 50, nothing submitted twice
    assert len(st['circuits_executed']) == 1000 and set(st['circuits_executed'].values()) == {1}
    assert st['requests']['GET /v0.4/jobs'] >= 1  # lost POSTs were looked up, not resent


def test_dropped_post_is_adopted_not_resubmitted(emulator):
    emulator.config.drop_rate, emulator.config.max_faults = 1.0, 1  # exactly the first accepted POST loses its answer
    payload, exact = circuits_and_probs(6)
    with client_for(emulator, limits=IonQLimits(max_circuits=3)) as client:
        res = client.sync.run_batch(payload)
    st = emulator.stats()
    assert st['faults'] == {'drop': 1} and posts(emulator) == 2 and st['jobs_created'] == 2
    np.testing.assert_allclose(np.stack([r.probabilities for r in res]), exact, atol=1e-9)


def every_post_answer_dropped(srv):
    srv.config.drop_rate, srv.config.fault_routes = 1.0, ('create_job',)


@pytest.mark.parametrize('n_jobs, n_circuits', [(1, 2_050), (1, 5_000), (10, 5_000)])
def test_lost_post_answers_never_run_a_circuit_twice(emulator, n_jobs, n_circuits):
    """Every POST /jobs loses its answer; whatever the job size, and with 10 jobs submitted at once, each job is
    found (its children, listed ahead of it, lead to it) and every circuit is executed exactly once."""
    every_post_answer_dropped(emulator)
    payload, exact = circuits_and_probs(n_circuits, n=2)
    with client_for(emulator, limits=IonQLimits(max_circuits=n_circuits // n_jobs)) as client:
        res = client.sync.run_batch(payload, shots=10)
    st = emulator.stats()
    assert st['faults'] == {'drop': n_jobs} and posts(emulator) == n_jobs and st['jobs_created'] == n_jobs
    assert st['circuits_submitted'] == n_circuits == len(st['circuits_executed'])
    assert set(st['circuits_executed'].values()) == {1}
    np.testing.assert_allclose(np.stack([r.probabilities for r in res]), exact, atol=1e-9)


@pytest.mark.parametrize('settle, jobs', [(2.0, 1), (0.05, 2)])
def test_a_slow_listing_is_waited_for_lost_post_settle_seconds(emulator, settle, jobs):
    """The server creates the job but lists it only 0.3 s later: within `lost_post_settle` the client finds it and
    runs every circuit once; a settle window shorter than the lag resubmits (the knob is real)."""
    every_post_answer_dropped(emulator)
    emulator.config.list_lag, emulator.config.max_faults = 0.3, 1
    payload, exact = circuits_and_probs(40, n=2)
    with client_for(emulator, lost_post_settle=settle) as client:
        res = client.sync.run_batch(payload, shots=10)
    st = emulator.stats()
    assert st['jobs_created'] == jobs == posts(emulator)
    assert sum(st['circuits_executed'].values()) == 40 * jobs
    np.testing.assert_allclose(np.stack([r.probabilities for r in res]), exact, atol=1e-9)


def test_unknown_post_outcome_fails_naming_the_tag_instead_of_resubmitting(emulator):
    every_post_answer_dropped(emulator)
    async def listing_unavailable(request): raise _HTTPError(503, 'Service Unavailable')
    emulator.app._list_jobs = listing_unavailable
    payload, _ = circuits_and_probs(3)
    with client_for(emulator, max_retries=2) as client:
        with pytest.raises(IonQServerError, match=r"job tag 'qstore-[0-9a-f]{32}' was created cannot be est"):
            client.sync.submit_batch(payload)
    assert posts(emulator) == 1 and emulator.stats()['jobs_created'] == 1


def test_batch_manager_keeps_the_results_of_jobs_that_did_not_fail(emulator):
    """Through CircuitBatchManager: 10 jobs of 30 circuits, some failing on the server. Every other job runs to the
    end (none is canceled), its circuits come back with their places in the batch, and no circuit runs twice."""
    emulator.config.fail_rate = 0.3
    c = reference_circuit(3, 1)
    v = reference_values(c, 300, 4)
    m = CircuitBatchManager('ionq.simulator', adaptive_batch_sizing=False, fixed_chunk_size=30,
                            base_url=emulator.base_url, api_key=KEY, seed=1, **FAST)
    with m, pytest.raises(IonQBatchError) as e: m.run(c, v, shots=10)
    failed, kept = e.value.errors, e.value.results
    st = emulator.stats()
    assert 0 < len(failed) < 10 and len(kept) == 300 - 30 * len(failed) and st['jobs_created'] == 10
    assert set(st['circuits_executed'].values()) == {1} and len(st['circuits_executed']) == len(kept)
    idx = [r.index for r in kept]
    exact = StatevectorSimulator().probabilities(c, v)
    np.testing.assert_allclose(np.stack([r.probabilities for r in kept]), exact[idx], atol=1e-9)


def test_one_failed_job_keeps_the_others_results(emulator):
    """10 jobs of 30 circuits, some failing on the server: the completed jobs' circuits come back (in their places in
    the batch), each failed job is reported by id; a 500 on a results GET is retried rather than fatal."""
    payload, exact = circuits_and_probs(300)
    emulator.config.fail_rate = 0.3
    with client_for(emulator, limits=IonQLimits(max_circuits=30)) as client:
        with pytest.raises(IonQBatchError) as e:
            client.sync.run_batch(payload, shots=10)
    failed, kept = e.value.errors, e.value.results
    assert 0 < len(failed) < 10 and all(isinstance(x, IonQJobFailedError) for x in failed.values())
    assert len(kept) == 300 - 30 * len(failed) and not {r.job_id for r in kept} & set(failed)
    idx = [r.index for r in kept]
    np.testing.assert_allclose(np.stack([r.probabilities for r in kept]), exact[idx], atol=1e-9)
    emulator.config.fail_rate, emulator.config.error_rate, emulator.config.error_codes = 0.0, 1.0, (500,)
    emulator.config.fault_routes, emulator.config.max_faults = ('results',), 1
    with client_for(emulator, limits=IonQLimits(max_circuits=30)) as client:
        res = client.sync.run_batch(payload[:60], shots=10)
    assert emulator.stats()['faults'] == {'500': 1} and [r.index for r in res] == list(range(60))


def test_chunking_respects_limits_one_post_per_chunk(emulator):
    payload, exact = circuits_and_probs(30)  # reference_circuit(4, 1): 4 + 8 + 4 = 16 gates each
    assert {len(c['circuit']) for c in payload} == {16}
    cases = [(IonQLimits(max_circuits=7), [7, 7, 7, 7, 2]),
             (IonQLimits(max_gates=40), [2] * 15),  # 3 x 16 > 40
             (IonQLimits(max_request_bytes=6_000), None)]
    for limits, sizes in cases:
        emulator.app.reset_stats()
        with client_for(emulator, limits=limits) as client:
            jobs = client.sync.submit_batch(payload, shots=10)
            client.sync.wait(jobs)
            res = client.sync.get_results_parallel(jobs)
        if sizes is not None: assert [j.n_circuits for j in jobs] == sizes
        else: assert len(jobs) > 2 and sum(j.n_circuits for j in jobs) == 30
        assert posts(emulator) == len(jobs) and emulator.stats()['jobs_created'] == len(jobs)
        np.testing.assert_allclose(np.stack([r.probabilities for r in res]), exact, atol=1e-9)


def test_request_count_is_per_chunk_not_per_circuit(emulator):
    """Polling follows IonQ's predicted times, so one job of 300 circuits (0.3 s of execution) costs a handful of
    requests."""
    emulator.config.latency, emulator.config.execution_time = 0.005, 0.001
    payload, _ = circuits_and_probs(300)
    with client_for(emulator) as client: client.sync.run_batch(payload)
    assert posts(emulator) == 1 and sum(emulator.stats()['requests'].values()) <= 10


def test_timeout_cancels_remote_job(emulator):
    emulator.config.execution_time = 5.0  # per circuit
    payload, _ = circuits_and_probs(2)
    with client_for(emulator) as client:
        jobs = client.sync.submit_batch(payload)
        with pytest.raises(IonQTimeoutError, match='canceled on the server') as e:
            client.sync.wait(jobs, timeout=0.2)
        assert isinstance(e.value, TimeoutError)
    assert emulator.app.job_status(jobs[0].id) == 'canceled'
    assert emulator.stats()['requests']['PUT /v0.4/jobs/{job_id}/status/cancel'] == 1


def test_run_batch_timeout_cancels_too(emulator):
    emulator.config.execution_time = 5.0
    payload, _ = circuits_and_probs(2)
    with client_for(emulator) as client:
        with pytest.raises(IonQTimeoutError): client.sync.run_batch(payload, timeout=0.2)
    parents = [j for j in emulator.app._jobs.values() if j.children]
    assert len(parents) == 1 and emulator.app.job_status(parents[0].id) == 'canceled'


def test_401_and_400_fail_fast_and_never_leak_the_key(emulator, caplog):
    caplog.set_level(logging.DEBUG)  # root logger: includes httpx and httpcore debug output
    payload, _ = circuits_and_probs(2)
    wrong = 'ionq-wrong-key-11d0c94'
    with client_for(emulator, key=wrong) as client:
        with pytest.raises(IonQAuthError, match='check the API key') as auth:
            client.sync.run_batch(payload)
        assert client.requests == 1 and posts(emulator) == 1
        assert wrong not in repr(client)
    bad = [dict(payload[0], circuit=[{'gate': 'frobnicate', 'target': 0}])]
    with client_for(emulator) as client:
        with pytest.raises(IonQRequestError, match='HTTP 400') as req:
            client.sync.submit_batch(bad)
        assert client.requests == 1 and posts(emulator) == 2
        assert 'frobnicate' in str(req.value)  # the server's reason reaches the user
        client.sync.run_batch(payload)  # and a good request with the same client logs its traffic
    assert 'POST /jobs' in caplog.text and len(caplog.records) > 5
    for k in (KEY, wrong):
        assert k not in caplog.text
        for e in (auth.value, req.value): assert k not in str(e) and k not in repr(e)


def test_backend_matches_local_within_shot_error(emulator):
    c = Circuit(3)
    a, b = c.parameter('a'), c.parameter('b')
    c.ry(0, a).cnot(0, 1).rx(2, b).cz(1, 2).ry(1, 0.5 * a + 0.2)
    values = np.array([[0.3, -1.1], [1.7, 0.4], [-2.5, 2.0]])
    obs = ['Z0', 'Z1 Z2', 'X0', '0.5*Y2 + Z1']
    exact = LocalBackend().run(c, values, obs).expectations
    backend = get_backend('ionq.simulator', api_key=KEY, base_url=emulator.base_url, seed=5, **FAST)
    res = backend.run(c, values, obs, shots=4000)
    z = (res.expectations - exact) / res.stderr
    assert np.all(np.abs(z) < 5) and np.all(res.stderr > 0)
    n_bases = len(res.metadata['bases'])
    # one job for all bases x rows
    assert posts(emulator) == 1 and emulator.stats()['circuits_submitted'] == 3 * n_bases
    fresh = get_backend('ionq.simulator', api_key=KEY, base_url=emulator.base_url, seed=5, **FAST)
    again = fresh.run(c, values, obs, shots=4000)
    np.testing.assert_array_equal(again.expectations, res.expectations)  # seeded client-side sampling
    backend.close()


def test_noisy_simulator_and_qpu_targets(emulator):
    c = Circuit(2).h(0).cnot(0, 1)
    noisy_local = LocalBackend(noise='aria-1').run(c, None, ['Z0 Z1']).expectations
    for name, opts in (('ionq.simulator', {'noise': 'aria-1'}), ('ionq.qpu.aria-1', {}), ('ionq.qpu', {})):
        be = get_backend(name, api_key=KEY, base_url=emulator.base_url, seed=3, **opts, **FAST)
        res = be.run(c, None, ['Z0 Z1'], shots=3000)
        assert abs(res.expectations[0, 0] - noisy_local[0, 0]) < 5 * res.stderr[0, 0]
        counts = be.run(c, None, shots=1000).counts
        assert counts.sum() == 1000 and counts[0, 1] + counts[0, 2] > 0  # noise shows up as odd-parity outcomes
        be.close()


def test_estimate_cost_uses_the_api_and_matches_the_formula(emulator):
    payload, _ = circuits_and_probs(5)
    with client_for(emulator) as client:
        api = client.sync.estimate_cost(payload, shots=10_000, backend='qpu.aria-1')
        formula = client.sync.estimate_cost(payload, shots=10_000, backend='qpu.aria-1', use_api=False)
    assert api['source'] == 'api' and formula['source'] == 'formula'
    assert math.isclose(api['usd'], formula['usd']) and emulator.stats()['requests']['GET /v0.4/jobs/estimate'] == 1
