"""Circuit pipeline: SmartCircuitCache, AdaptiveQueueManager and CircuitBatchManager against the IonQ emulator on
127.0.0.1."""
import asyncio, json, threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import qstore.pipeline.cache
from qstore.backends.base import LocalBackend
from qstore.pipeline.batch import CircuitBatchManager, CircuitBatchManagerV34, ResultCacheWarning
from qstore.testing import reference_circuit, reference_values
from qstore.pipeline.cache import SmartCircuitCache
from qstore.storage.db import Database
from qstore.ml.encoding import DataEncoder
from qstore.gradients.shift import parameter_shift
from qstore.ionq.backend import IonQBackend
from qstore.ionq.client import IonQJobFailedError
from qstore.ionq.emulator import EmulatorConfig, EmulatorServer, create_app
from qstore.ml.layers import HardwareEfficientQuantumLayer, QuantumModel
from qstore.ionq.jobs import AdaptiveQueueManager
from qstore.simulator import StatevectorSimulator
from qstore.ml.trainer import QuantumTrainer, TrainingConfig

KEY = 'test-key'  # the emulator accepts any key


class Recorder:
    "ASGI wrapper around the emulator: keeps every job body it receives and the most requests in progress at once."
    def __init__(self, app):
        self.app, self.bodies, self.active, self.peak = app, [], 0, 0
        self._lock = threading.Lock()

    config = property(lambda self: self.app.config)
    def stats(self): return self.app.stats()
    def reset(self):
        self.app.reset_stats()
        self.bodies.clear()
        self.peak = self.active

    async def __call__(self, scope, receive, send):
        if scope['type'] != 'http': return await self.app(scope, receive, send)
        with self._lock:
            self.active += 1
            self.peak = max(self.peak, self.active)
        try:
            if scope['method'] == 'POST' and scope['path'].endswith('/jobs'):
                chunks, more = [], True
                while more:
                    msg = await receive()
                    chunks.append(msg.get('body', b''))
                    more = msg.get('more_body', False)
                body, replayed = b''.join(chunks), False
                self.bodies.append(json.loads(body))
                async def replay():
                    nonlocal replayed
                    if replayed: return await receive()
                    replayed = True
                    return {'type': 'http.request', 'body': body, 'more_body': False}
                return await self.app(scope, replay, send)
            return await self.app(scope, receive, send)
        finally:
            with self._lock: self.active -= 1


@pytest.fixture(scope='module')
def server():
    rec = Recorder(create_app(EmulatorConfig(latency=0.01)))
    with EmulatorServer(app=rec) as srv:
        yield srv


@pytest.fixture
def emu(server):
    "The emulator, reset, with default timing; yields (server, recorder, backend options)."
    rec = server.app
    cfg = rec.config
    saved = {k: getattr(cfg, k) for k in ('latency', 'queue_time', 'execution_time', 'error_rate', 'error_codes',
                                          'fault_routes', 'fail_rate', 'max_faults', 'seed')}
    rec.reset()
    yield server, rec, dict(base_url=server.base_url, api_key=KEY, seed=11, rate_limit=500.0, burst=100,
                            poll_interval=0.02)
    for k, v in saved.items(): setattr(cfg, k, v)


def total_requests(server): return sum(server.stats()['requests'].values())


def same_circuits(a: list, b: list, atol: float = 1e-12) -> bool:
    """IonQ JSON circuits equal in every gate and qubit, and in every angle to atol (a batched matmul may round
    differently)."""
    def parts(cs):
        keys, nums = [], []
        for c in cs:
            keys.append((c['gateset'], c['qubits'],
                         [{k: v for k,
                           v in g.items() if k not in ('phase', 'phases', 'angle', 'rotation')} for g in c['circuit']]))
            nums += [x for g in c['circuit'] for k in ('phase', 'phases', 'angle',
                                                       'rotation') if k in g for x in np.atleast_1d(g[k])]
        return keys, np.array(nums)
    (ka, na), (kb, nb) = parts(a), parts(b)
    return ka == kb and na.shape == nb.shape and np.allclose(na, nb, atol=atol, rtol=0)


# ------------------------------------------------------------------ SmartCircuitCache

def test_cache_hits_repeated_structure_and_misses_new_structure():
    cache = SmartCircuitCache()
    for seed in range(5):  # new objects, same structure, new values
        rows = cache.bind(reference_circuit(4, 2), reference_values(reference_circuit(4, 2), 3, seed=seed))
        assert len(rows) == 3
    s = cache.stats()['templates']
    assert (s['hits'], s['misses']) == (4, 1)
    cache.bind(reference_circuit(4, 3), reference_values(reference_circuit(4, 3), 3))  # one more layer: new structure
    cache.bind(reference_circuit(4, 2), reference_values(reference_circuit(4, 2), 3), native='aria')  # new gateset
    cache.template(reference_circuit(4, 2), 'ionq.qpu.aria-1')  # new backend
    s = cache.stats()['templates']
    assert (s['hits'], s['misses'], s['entries']) == (4, 4, 4)


def test_cache_is_correct_under_concurrent_threads_and_coroutines(monkeypatch):
    builds = []
    real = qstore.pipeline.cache.compile_template
    def counting(*args, **kw):
        builds.append(args[0].structural_hash)
        return real(*args, **kw)
    monkeypatch.setattr(qstore.pipeline.cache, 'compile_template', counting)
    cache = SmartCircuitCache(max_result_bytes=1 << 20)
    sim = StatevectorSimulator()
    def work(i):
        errs = []
        for k in range(25):
            L = 1 + (i + k) % 3
            c = reference_circuit(3, L)
            v = reference_values(c, 4, seed=k % 5)
            e = cache.template(c, 'ionq.simulator', native='aria')
            p = sim.probabilities(e.circuit, e.values(v))
            errs.append(np.abs(p - sim.probabilities(c, v)).max())
            r = cache.results(c, v, ['Z0', 'X1'], lambda rows: sim.expectation(c, rows, ['Z0', 'X1']), 'local')
            errs.append(np.abs(r - sim.expectation(c, v, ['Z0', 'X1'])).max())
        return max(errs)
    with ThreadPoolExecutor(8) as ex: worst = max(ex.map(work, range(8)))
    assert worst < 1e-10
    assert sorted(builds) == sorted({reference_circuit(3, L).structural_hash for L in (1, 2, 3)})  # each built once
    s = cache.stats()
    assert s['templates']['misses'] == 3 and s['templates']['hits'] == 8 * 25 - 3
    assert s['results']['entries'] == 3 * 5 * 4  # 3 structures x 5 value sets x 4 rows
    assert s['results']['hits'] + s['results']['misses'] == 8 * 25 * 4 and s['results']['hits'] > 8 * 25 * 4 / 2

    async def coros():
        c2 = SmartCircuitCache()
        es = await asyncio.gather(*(c2.atemplate(reference_circuit(5, 2), 'ionq.simulator', 'aria') for _ in range(20)))
        return c2, es
    builds.clear()
    c2, es = asyncio.run(coros())
    assert len({id(e) for e in es}) == 1 and len(builds) == 1 and c2.stats()['templates']['misses'] == 1


def test_result_cache_refuses_shots():
    cache = SmartCircuitCache(max_result_bytes=1 << 16)
    c = reference_circuit(3, 1)
    v = reference_values(c, 2)
    with pytest.raises(ValueError, match='analytic'):
        cache.results(c, v, ['Z0'], lambda r: np.zeros((len(r), 1)), shots=100)


def test_vectorised_bind_is_much_faster_than_rebuild_and_compile():
    from time import perf_counter
    from qstore.ionq.serialize import to_ionq_json
    c = reference_circuit(4, 2)
    v = reference_values(c, 200)
    def rebuild():
        out = []
        for row in v:
            comp = qstore.pipeline.cache._native_compile(reference_circuit(4, 2), 'aria', False, fresh=True)
            out.append(to_ionq_json(comp.circuit, comp.native_values(row[None]), 'native'))
        return out
    cache = SmartCircuitCache()
    cache.bind(c, v[:1], native='aria')
    t0 = perf_counter()
    slow = rebuild()
    t1 = perf_counter()
    fast = cache.bind(c, v, native='aria')
    t2 = perf_counter()
    assert same_circuits(fast, slow)
    assert (t1 - t0) > 10 * (t2 - t1), (t1 - t0, t2 - t1)


# ------------------------------------------------------------------ AdaptiveQueueManager

def test_queue_manager_decisions_have_reasons_and_respect_limits():
    q = AdaptiveQueueManager(initial_concurrency=4)
    q.observe_queue(0)
    p = q.plan(12_000, 40, 1_000)
    assert all(hi - lo <= 5000 for lo, hi in p.bounds(12_000)) and p.chunks >= 3
    p = q.plan(3_000, 100, 1_000)
    assert p.chunk_size <= 1500  # 150,000 gates per job
    p = q.plan(3_000, 10, 10_000)
    assert p.chunk_size * 10_001 <= 10_000_000
    assert all(d.reason for d in q.decisions)


# ------------------------------------------------------------------ CircuitBatchManager: flags

def test_use_batch_api_switches_job_kind_and_request_count(emu):
    server, rec, opts = emu
    c = reference_circuit(3, 2)
    v = reference_values(c, 30)
    out = {}
    for flag in (True, False):
        rec.reset()
        with CircuitBatchManager('ionq.simulator', use_batch_api=flag, **opts) as m:
            out[flag] = m.run(c, v, ['Z0', 'Z1'], shots=300).expectations
            rep = m.report()
        kinds = {b['type'] for b in rec.bodies}
        out[flag, 'jobs'], out[flag, 'req'], out[flag, 'kinds'] = len(rec.bodies), total_requests(server), kinds
        assert rep.jobs == len(rec.bodies) and rep.requests == total_requests(server)
    assert out[True, 'kinds'] == {'ionq.multi-circuit.v1'} and out[False, 'kinds'] == {'ionq.circuit.v1'}
    assert out[False, 'jobs'] == 30 and out[True, 'jobs'] <= 4
    assert out[False, 'req'] >= 3 * 30 and out[True, 'req'] <= 3 * 4 + 1
    np.testing.assert_array_equal(out[True], out[False])  # same seed, exact probabilities: same counts


def test_use_native_gates_sends_native_gateset(emu):
    server, rec, opts = emu
    c = reference_circuit(4, 2)
    v = reference_values(c, 10)
    res = {}
    for flag in (False, True):
        rec.reset()
        with CircuitBatchManager('ionq.simulator', use_native_gates=flag, **opts) as m:
            res[flag] = m.run(c, v, ['Z0', 'X1 X2'], shots=400)
        gatesets = {b['input']['gateset'] for b in rec.bodies}
        gates = {g['gate'] for b in rec.bodies for e in b['input']['circuits'] for g in e['circuit']}
        if flag: assert gatesets == {'native'} and gates <= {'gpi', 'gpi2', 'ms'} and 'ms' in gates
        else: assert gatesets == {'qis'} and {'ry', 'rz', 'cnot', 'h'} <= gates
    exact = LocalBackend().run(c, v, ['Z0', 'X1 X2']).expectations
    for r in res.values():
        assert (np.abs(r.expectations - exact) <= 5 * r.stderr + 1e-9).all()
    np.testing.assert_allclose(res[True].expectations, res[False].expectations, atol=1e-12)


def test_forte_targets_compile_to_zz(emu):
    server, rec, opts = emu
    c = reference_circuit(3, 1)
    v = reference_values(c, 4)
    with CircuitBatchManager('ionq.simulator', use_native_gates=True, noise='forte-1', **opts) as m:
        m.run(c, v, ['Z0'], shots=200)
    gates = {g['gate'] for b in rec.bodies for e in b['input']['circuits'] for g in e['circuit']}
    assert gates <= {'gpi', 'gpi2', 'zz'} and 'zz' in gates


def test_enable_smart_caching_skips_recompiling(emu, monkeypatch):
    server, rec, opts = emu
    compiles = []
    real = qstore.pipeline.cache._native_compile
    monkeypatch.setattr(qstore.pipeline.cache, '_native_compile', lambda *a,
                        **k: compiles.append(a[0].structural_hash) or real(*a, **k))
    c = reference_circuit(3, 2)
    reports = {}
    for flag in (True, False):
        compiles.clear()
        with CircuitBatchManager('ionq.simulator', use_native_gates=True, enable_smart_caching=flag, **opts) as m:
            for k in range(4): m.run(c, reference_values(c, 6, seed=k), ['Z0', 'X0'], shots=100)  # 2 bases per run
            reports[flag] = (m.report(), len(compiles))
    rep_on, n_on = reports[True]
    rep_off, n_off = reports[False]
    assert n_on == 2 and (rep_on.template_cache['hits'], rep_on.template_cache['misses']) == (6, 2)
    assert n_off == 8 and rep_off.template_cache['hits'] == rep_off.template_cache['misses'] == 0
    assert rep_off.compile_seconds > rep_on.compile_seconds


def test_adaptive_batch_sizing_follows_the_queue(emu):
    server, rec, opts = emu
    c = reference_circuit(3, 1)
    v = reference_values(c, 40)
    def jobs(**kw):
        rec.reset()
        with CircuitBatchManager('ionq.simulator', **kw, **opts) as m:
            m.run(c, v, ['Z0'], shots=100)
            return len(rec.bodies), m.report()
    server.config.queue_time = 0.2
    slow = jobs(queue=AdaptiveQueueManager(slow_queue_seconds=0.1, initial_concurrency=4))
    fast = jobs(queue=AdaptiveQueueManager(slow_queue_seconds=10.0, initial_concurrency=4))
    fixed_slow = jobs(adaptive_batch_sizing=False, fixed_chunk_size=15)[0]
    server.config.queue_time = 0.0
    fixed_fast = jobs(adaptive_batch_sizing=False, fixed_chunk_size=15)[0]
    assert slow[0] == 1 and fast[0] == 4 and fixed_slow == fixed_fast == 3
    assert any('queue slow' in d for d in slow[1].queue_decisions)
    assert any('queue fast' in d for d in fast[1].queue_decisions)


def test_connection_pool_size_bounds_requests_in_flight(emu):
    server, rec, opts = emu
    server.config.latency = 0.03
    c = reference_circuit(3, 1)
    v = reference_values(c, 10)
    peaks = {}
    for pool in (1, 4):
        rec.reset()
        with CircuitBatchManager('ionq.simulator', use_batch_api=False, adaptive_batch_sizing=False,
                                 connection_pool_size=pool, **opts) as m:
            m.run(c, v, ['Z0'], shots=100)
            assert m.inner.client.connection_pool_size == pool
            peaks[pool] = (rec.peak, m.report().max_in_flight)
    assert peaks[1] == (1, 1)
    assert 1 < peaks[4][0] <= 4 and 1 < peaks[4][1] <= 4


def test_pool_size_must_match_a_given_client(emu):
    server, rec, opts = emu
    be = IonQBackend('simulator', **{k: v for k, v in opts.items()}, connection_pool_size=2)
    with pytest.raises(ValueError, match='differs from the given backend'):
        CircuitBatchManager(be, connection_pool_size=5)
    m = CircuitBatchManager(be)  # a ready backend: used as it is
    assert m.connection_pool_size == 2 and m.report().bytes_sent is None
    be.close()


# ------------------------------------------------------------------ results through the manager

def test_local_results_equal_without_manager_thread_and_process_pools():
    c = reference_circuit(5, 2)
    v = reference_values(c, 400)
    obs = ['Z0', 'X1 Y2', '0.3*Z3 Z4']
    ref = LocalBackend(seed=2)
    for kind in ('thread', 'process'):
        with CircuitBatchManager(LocalBackend(seed=2), max_workers=2, local_executor=kind,
                                 parallel_min_amplitudes=1 << 10) as m:
            np.testing.assert_allclose(m.run(c, v, obs).expectations, ref.run(c, v, obs).expectations, atol=1e-12,
                                       rtol=0)
            assert m.queue.decisions[-1].chunks == 2
    with CircuitBatchManager(LocalBackend(seed=2), max_workers=2, parallel_min_amplitudes=1 << 10) as m:
        a = m.run(c, v, obs, shots=300, seed=9)
        b = ref.run(c, v, obs, shots=300, seed=9)
        np.testing.assert_array_equal(a.expectations, b.expectations)
        g1, g2 = parameter_shift(c, v[:4], obs, m), parameter_shift(c, v[:4], obs, ref)
        np.testing.assert_allclose(g1.jacobian, g2.jacobian, atol=1e-12, rtol=0)
    with CircuitBatchManager('local', use_native_gates=True) as m:  # the compiled circuit is what gets simulated
        np.testing.assert_allclose(m.run(c, v, obs).expectations, ref.run(c, v, obs).expectations, atol=1e-10, rtol=0)


def test_ionq_results_equal_plain_backend_within_shot_error(emu):
    server, rec, opts = emu
    c = reference_circuit(4, 2)
    v = reference_values(c, 12)
    obs = ['Z0', 'X1', 'Y2 Z3']
    plain = IonQBackend('simulator', **opts)
    direct = plain.run(c, v, obs, shots=1000)
    plain.close()
    exact = LocalBackend().run(c, v, obs).expectations
    for flags in (dict(), dict(use_native_gates=True),
                  dict(use_batch_api=False, adaptive_batch_sizing=False, enable_smart_caching=False)):
        with CircuitBatchManager('ionq.simulator', **flags, **opts) as m:
            r = m.run(c, v, obs, shots=1000)
        # the same seeded draws as without the manager
        np.testing.assert_allclose(r.expectations, direct.expectations, atol=1e-12)
        assert (np.abs(r.expectations - exact) <= 5 * r.stderr + 1e-9).all()


def test_sync_run_inside_a_running_event_loop_and_arun(emu):
    server, rec, opts = emu
    c = reference_circuit(3, 1)
    v = reference_values(c, 5)
    with CircuitBatchManager('ionq.simulator', **opts) as m:
        async def inside(): return m.run(c, v, ['Z0'], shots=100), await m.arun(c, v, ['Z0'], shots=100)
        a, b = asyncio.run(inside())
    assert a.expectations.shape == b.expectations.shape == (5, 1)


def test_rate_limits_back_off_and_results_stay_right(emu):
    server, rec, opts = emu
    cfg = server.config
    # never 7 in a row: no give-up
    cfg.error_rate, cfg.error_codes, cfg.fault_routes, cfg.max_faults = 0.5, (429,), ('create_job',), 6
    c = reference_circuit(3, 1)
    v = reference_values(c, 40)
    q = AdaptiveQueueManager(initial_concurrency=8, min_chunk=5, backoff_cooldown=30)
    with CircuitBatchManager('ionq.simulator', queue=q, backoff_base=0.01, **opts) as m:
        r = m.run(c, v, ['Z0'], shots=2000)
        rep = m.report()
    assert rep.rate_limited > 0 and q.concurrency == 4
    assert any(d.startswith('[backoff] HTTP 429') for d in rep.queue_decisions)
    assert server.stats()['circuits_submitted'] == 40  # retried creates were never duplicated
    exact = LocalBackend().run(c, v, ['Z0']).expectations
    assert (np.abs(r.expectations - exact) <= 5 * r.stderr + 1e-9).all()



def test_a_ready_ionq_backend_feeds_adaptive_sizing_too(emu):
    "A ready IonQBackend (its own client): the queue manager still sees the 429s and backs off."
    server, rec, opts = emu
    cfg = server.config
    cfg.error_rate, cfg.error_codes, cfg.fault_routes, cfg.max_faults = 0.5, (429,), ('create_job',), 6
    c = reference_circuit(3, 1)
    v = reference_values(c, 40)
    q = AdaptiveQueueManager(initial_concurrency=8, min_chunk=5, backoff_cooldown=30)
    be = IonQBackend('simulator', backoff_base=0.01, **opts)
    with CircuitBatchManager(be, queue=q) as m:
        r = m.run(c, v, ['Z0'], shots=2000)
        rep = m.report()
    assert rep.rate_limited > 0 and q.concurrency == 4 and rep.bytes_sent is None
    assert not any('queue state unavailable' in d for d in rep.queue_decisions)
    assert be.client.response_listeners == []  # closing the manager detached it from the client it does not own
    be.close()
    assert server.stats()['circuits_submitted'] == 40
    exact = LocalBackend().run(c, v, ['Z0']).expectations
    assert (np.abs(r.expectations - exact) <= 5 * r.stderr + 1e-9).all()

def test_failed_job_raises(emu):
    server, rec, opts = emu
    server.config.fail_rate = 1.0
    c = reference_circuit(3, 1)
    with CircuitBatchManager('ionq.simulator', **opts) as m, pytest.raises(IonQJobFailedError):
        m.run(c, reference_values(c, 20), ['Z0'], shots=100)


def test_result_cache_warns_with_shots():
    c = reference_circuit(3, 1)
    v = reference_values(c, 3)
    m = CircuitBatchManager('local', cache_results=True)
    m.run(c, v, ['Z0'])
    m.run(c, v, ['Z0'])
    assert m.report().result_cache['hits'] == 3
    with pytest.warns(ResultCacheWarning):
        m.run(c, v, ['Z0'], shots=50)
    assert m.report().result_cache['hits'] == 3


def test_alias():
    assert CircuitBatchManagerV34 is CircuitBatchManager


# ------------------------------------------------------------------ training through the manager

@pytest.mark.parametrize('optimizer, gradient', [('spsa', 'spsa'), ('sgd', 'parameter_shift')])
def test_training_native_matches_qis_within_shot_noise(emu, tmp_path, optimizer, gradient):
    server, rec, opts = emu
    rng = np.random.default_rng(4)
    X = rng.uniform(0, np.pi, (16, 2))
    y = (X[:, 0] > X[:, 1]).astype(int)
    curves = {}
    for native in (False, True):
        model = QuantumModel(DataEncoder('angle', n_features=2), HardwareEfficientQuantumLayer(2, 1), ['Z0'],
                             head='affine')
        cfg = TrainingConfig(epochs=2, batch_size=8, optimizer=optimizer, gradient_method=gradient, learning_rate=0.2,
                             loss='cross_entropy', shots_per_circuit=2000, progress=False, seed=5)
        losses = []
        rec.reset()
        with CircuitBatchManager('ionq.simulator', use_native_gates=native, **opts) as m:
            QuantumTrainer(model, cfg, backend=m, db=Database.open(tmp_path / f"db{native}"),
                           callbacks=[lambda tr, ev,
                                      logs: ev == 'step' and losses.append(logs['loss']) and False]).fit((X, y))
        assert {b['input']['gateset'] for b in rec.bodies} == {'native' if native else 'qis'}
        curves[native] = np.array(losses)
    assert len(curves[True]) == 4
    np.testing.assert_allclose(curves[True], curves[False], atol=0.05)  # shot noise of a 2,000-shot loss is ~0.02
