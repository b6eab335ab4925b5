"""CheckpointManager: bit-exact round trips, RNG and loader resume, keep-last-N, damaged files, crash safety,
secrets."""
import math
import random
import signal
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest

from qstore.ml.checkpoint import CheckpointError, CheckpointManager, decode_checkpoint, encode_checkpoint
from qstore.storage.db import DataLoader
from qstore.gradients.spsa import SPSAGradientEstimator
from qstore.storage.files import REDACTED, CorruptStoreError

SECRET = 'sk-test-SECRET-123'


def assert_identical(a, b, where='state'):
    "Same structure, same Python/numpy types, arrays with the same dtype, shape and bytes."
    assert type(a) is type(b), f"{where}: {type(a).__name__} != {type(b).__name__}"
    if isinstance(a, np.ndarray):
        assert (a.dtype, a.shape) == (b.dtype, b.shape), f"{where}: {a.dtype}{a.shape} != {b.dtype}{b.shape}"
        assert a.tobytes() == b.tobytes(), f"{where}: array bytes differ"
    elif isinstance(a, np.generic):
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes(), where
    elif isinstance(a, dict):
        assert list(a) == list(b), f"{where}: keys {list(a)} != {list(b)}"
        for k in a: assert_identical(a[k], b[k], f"{where}/{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)): assert_identical(x, y, f"{where}/{i}")
    elif isinstance(a, float) and math.isnan(a):
        assert math.isnan(b), where
    elif isinstance(a, float):
        assert math.copysign(1, a) == math.copysign(1, b) and a == b, where  # -0.0 stays -0.0
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def rich_state():
    rng = np.random.default_rng(0)
    arrays = {str(dt): rng.normal(size=(3, 2)).astype(dt) for dt in ('float64', 'float32', 'float16', 'int64', 'int8',
                                                                     'uint32')}
    arrays['bool'] = rng.random((2, 3)) > 0.5
    c = rng.normal(size=(2, 3)) + 1j * rng.normal(size=(2, 3))
    arrays['complex128'], arrays['complex64'] = c, c.astype(np.complex64)
    arrays['complex_special'] = np.array([complex(np.inf, -0.0), complex(np.nan, 1), -0.0 + 0j])
    arrays['float_special'] = np.array([np.nan, -np.inf, -0.0, 5e-324])
    return {
        'weights': rng.normal(size=7),
        'arrays': arrays,
        'zero_d': {'f64': np.array(1.5), 'c128': np.array(2 - 3j), 'c64': np.array(1j, np.complex64),
                   'i64': np.array(-4), 'bool': np.array(True)},
        'empty_arrays': [np.zeros((0, 3)), np.zeros(0, np.complex128)],
        'non_contiguous': np.arange(12.0).reshape(3, 4).T,
        'numpy_scalars': [np.float32(0.1), np.int64(2**62), np.bool_(False), np.complex128(1 + 2j)],
        'optimizer': {'m': rng.normal(size=7), 'v': rng.random(7), 't': 3, 'lr': [0.1, 0.05], 'spsa': None},
        'epoch': 2, 'step': 42, 'big_int': 2**200 + 1, 'neg_zero': -0.0, 'nan': float('nan'), 'inf': float('-inf'),
        'tiny': 5e-324, 'third': 1 / 3, 'flag': True, 'nothing': None, 'text': 'héllo "quoted" \\ / $x',
        'py_complex': 1.5 - 0.25j, 'empty_dict': {}, 'empty_list': [], 'empty_tuple': (),
        'nested_tuple': (1, (2.5, 'a', None), [3]), 'int_keys': {0: 'a', 12: {'b': 1}}, '$dollar': {'$array': 'x'},
        'metrics': {'loss': [1.0, 0.5, 0.25], 'acc': []},
        'config': {'backend': 'local', 'shots': None, 'layers': 2},
    }


# --- round trips ----------------------------------------------------------------------------------

def test_roundtrip_is_bit_exact(tmp_path):
    state = rich_state()
    mgr = CheckpointManager(tmp_path)
    path = mgr.save(42, state)
    assert path.name == 'ckpt-00000042.safetensors'
    back = mgr.load(path)
    expected = {**state, 'non_contiguous': np.ascontiguousarray(state['non_contiguous'])}
    assert_identical(expected, back)
    assert all(a.flags.writeable for a in back['arrays'].values())  # usable as live weights
    assert type(back['big_int']) is int and type(back['epoch']) is int and type(back['third']) is float


def test_numpy_generator_states_resume_the_same_stream(tmp_path):
    mgr = CheckpointManager(tmp_path)
    kinds = ('PCG64', 'PCG64DXSM', 'MT19937', 'Philox', 'SFC64')
    gens = {name: np.random.Generator(getattr(np.random, name)(7)) for name in kinds}
    for g in gens.values(): g.random(5)  # mid-stream, with a cached uint32 for some
    gens['PCG64'].integers(0, 2**32, dtype=np.uint32)
    mgr.save(1, {'rng': {name: g.bit_generator.state for name, g in gens.items()}})
    _, state = mgr.latest()
    for name, g in gens.items():
        restored = np.random.Generator(getattr(np.random, name)())
        restored.bit_generator.state = state['rng'][name]
        np.testing.assert_array_equal(restored.random(20), g.random(20))
        def draws(gen): return gen.integers(0, 2**32, 5, dtype=np.uint32).tolist()
        assert draws(restored) == draws(g)


def test_python_random_state_roundtrips_as_the_same_tuple(tmp_path):
    r = random.Random(3)
    r.random()
    r.gauss(0, 1)  # gauss leaves a cached value in the state
    saved = r.getstate()
    mgr = CheckpointManager(tmp_path)
    back = mgr.load(mgr.save(5, {'python_random': saved}))['python_random']
    assert back == saved and type(back) is tuple and type(back[1]) is tuple
    fresh = random.Random()
    fresh.setstate(back)
    assert [fresh.random() for _ in range(5)] + [fresh.gauss(0, 1)] == [r.random() for _ in range(5)] + [r.gauss(0, 1)]


def test_loader_and_spsa_resume_bit_exactly_through_a_checkpoint(tmp_path):
    X = np.arange(40.0).reshape(20, 2)
    loader, spsa = DataLoader(X, batch_size=3, seed=1), SPSAGradientEstimator(seed=2, num_directions=2)
    it = iter(loader)
    for _ in range(4): next(it)
    spsa.directions(5)
    spsa.k = 7
    mgr = CheckpointManager(tmp_path)
    mgr.save(4, {'loader': loader.state_dict(), 'spsa': spsa.state_dict()})
    expected = [next(it)[0] for _ in range(3)], spsa.directions(5)
    _, state = mgr.latest()
    loader2 = DataLoader(X, batch_size=3, seed=99)
    loader2.load_state_dict(state['loader'])
    spsa2 = SPSAGradientEstimator(seed=99, num_directions=2).load_state_dict(state['spsa'])
    it2 = iter(loader2)
    batches = [next(it2)[0] for _ in range(3)]
    for a, b in zip(batches, expected[0]): np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(spsa2.directions(5), expected[1])
    assert spsa2.k == 7


# --- the directory: names, order, keep-last-N ------------------------------------------------------

def test_keep_last_n_and_order_by_step(tmp_path):
    mgr = CheckpointManager(tmp_path, keep_last=2)
    for step in (1, 5, 100_000_000, 30):
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter('always')
            mgr.save(step, {'step': step})
        assert bool(w) == (step == 30)  # a lower step than one on disk warns
    # ordered numerically, beyond the 8-digit padding; the just-written step 30 survives although it is older
    assert [mgr.step_of(p) for p in mgr.list()] == [30, 100_000_000]
    assert mgr.latest()[1] == {'step': 100_000_000}
    mgr.save(100_000_001, {'step': 1})
    assert [mgr.step_of(p) for p in mgr.list()] == [100_000_000, 100_000_001]
    keep_all = CheckpointManager(tmp_path / 'all', keep_last=None)
    for step in range(6): keep_all.save(step, {})
    assert len(keep_all.list()) == 6
    one = CheckpointManager(tmp_path / 'one', keep_last=1)
    for step in range(3): one.save(step, {'s': step})
    assert [p.name for p in one.list()] == ['ckpt-00000002.safetensors']
    one.save(2, {'s': 'again'})  # same step: replaced atomically
    assert one.latest()[1] == {'s': 'again'} and len(one.list()) == 1


def test_prefixes_share_a_directory(tmp_path):
    a = CheckpointManager(tmp_path, prefix='ckpt', keep_last=1)
    b = CheckpointManager(tmp_path, prefix='ckpt-best', keep_last=1)
    a.save(1, {'who': 'a'})
    b.save(2, {'who': 'b'})
    a.save(3, {'who': 'a'})
    assert [p.name for p in a.list()] == ['ckpt-00000003.safetensors']
    assert [p.name for p in b.list()] == ['ckpt-best-00000002.safetensors']
    (tmp_path / 'notes.txt').write_text('ignored')
    (tmp_path / 'ckpt-12.safetensors.bak').write_text('ignored')
    assert len(a.list()) == 1


def test_bad_arguments_say_what_to_fix(tmp_path):
    with pytest.raises(ValueError, match='keep_last must be a positive int'): CheckpointManager(tmp_path, keep_last=0)
    with pytest.raises(ValueError, match='prefix'): CheckpointManager(tmp_path, prefix='a/b')
    mgr = CheckpointManager(tmp_path)
    with pytest.raises(ValueError, match='step must be >= 0'): mgr.save(-1, {})
    with pytest.raises(TypeError): mgr.save(1.5, {})
    with pytest.raises(TypeError, match='state must be a dict'): mgr.save(1, [1])
    with pytest.raises(TypeError, match='optimizer/extra: a set cannot be checkpointed'):
        mgr.save(1, {'optimizer': {'extra': {1}}})
    with pytest.raises(TypeError, match=r'names: arrays of dtype <U1'): mgr.save(1, {'names': np.array(['a', 'b'])})
    with pytest.raises(TypeError, match='object'): mgr.save(1, {'x': np.array([None], dtype=object)})
    with pytest.raises(TypeError, match='must be str or int'): mgr.save(1, {'x': {(1, 2): 0}})
    with pytest.raises(ValueError, match='not named like a checkpoint'): mgr.step_of('model.safetensors')
    assert mgr.list() == []  # nothing half-written


# --- damaged files -------------------------------------------------------------------------------

def small_checkpoint():
    return encode_checkpoint(3, {'w': np.array([1.0, -2.0]), 'c': np.array(1j), 'epoch': 1, 'rng': (1, (2,), None)})


def test_every_truncation_and_every_flipped_bit_is_caught():
    data = small_checkpoint()
    assert decode_checkpoint(data)['epoch'] == 1
    for n in range(len(data)):
        with pytest.raises(CheckpointError, match='^ck.safetensors: '):
            decode_checkpoint(data[:n], 'ck.safetensors')
    for i in range(len(data)):
        for bit in (0, 5):  # low bit and a high bit: length prefix, header text, padding and tensor bytes alike
            bad = bytearray(data)
            bad[i] ^= 1 << bit
            with pytest.raises(CheckpointError, match='^ck.safetensors: '):
                decode_checkpoint(bytes(bad), 'ck.safetensors')


def test_damaged_newest_falls_back_to_previous_good_one_with_a_warning(tmp_path):
    mgr = CheckpointManager(tmp_path, keep_last=5)
    paths = [mgr.save(step, {'w': np.full(1000, float(step)), 'step': step}) for step in (1, 2, 3)]
    good = paths[1].read_bytes()
    size = len(good)
    damage = {'empty': b'', 'length prefix only': good[:8], 'inside the header': good[:200],
              'inside the tensors': good[:size // 2], 'last byte missing': good[:-1],
              'flipped tensor byte': good[:size - 100] + bytes([good[size - 100] ^ 0x10]) + good[size - 99:],
              'not a checkpoint': b'\x00' * size, 'appended bytes': good + b'\x00'}
    for what, content in damage.items():
        paths[2].write_bytes(content)
        with pytest.raises(CheckpointError) as e: mgr.load(paths[2])
        assert str(e.value).startswith(str(paths[2])), what
        assert isinstance(e.value, CorruptStoreError)
        with pytest.warns(UserWarning, match='skipping unreadable checkpoint: ' + str(paths[2])):
            path, state = mgr.latest()
        assert (path, state['step']) == (paths[1], 2), what
    paths[1].write_bytes(good[:100])
    with pytest.warns(UserWarning) as w:
        assert mgr.latest()[1]['step'] == 1  # skips two damaged files
    assert len(w) == 2
    paths[0].write_bytes(b'')
    with pytest.warns(UserWarning):
        assert mgr.latest() is None


def test_unknown_formats_and_newer_versions(tmp_path):
    import safetensors.numpy as stnp
    mgr = CheckpointManager(tmp_path)
    plain = tmp_path / 'ckpt-00000001.safetensors'
    plain.write_bytes(stnp.save({'w': np.ones(2)}))
    with pytest.raises(CheckpointError, match='not a qstore checkpoint'): mgr.load(plain)
    newer = tmp_path / 'ckpt-00000002.safetensors'
    newer.write_bytes(small_checkpoint().replace(b'"format_version":"1"', b'"format_version":"2"'))
    with pytest.raises(CheckpointError, match='format version .2.*upgrade qstore'): mgr.load(newer)
    with pytest.raises(FileNotFoundError): mgr.load(tmp_path / 'ckpt-00000009.safetensors')


# --- crash safety --------------------------------------------------------------------------------

CRASH_WRITER = r'''
import sys, numpy as np
from qstore.ml.checkpoint import CheckpointManager
mgr = CheckpointManager(sys.argv[1], keep_last=2)
start = int(sys.argv[2])
for step in range(start, start + 100_000):
    mgr.save(step,
             {'w': np.full(250_000, float(step)), 'step': step, 'rng': np.random.default_rng(step).bit_generator.state})
    if step == start: print('saving', flush=True)
'''


def test_sigkill_during_saves_never_leaves_latest_unreadable(tmp_path):
    rng, start = np.random.default_rng(0), 0
    for _ in range(6):
        child = subprocess.Popen([sys.executable, '-c', CRASH_WRITER, str(tmp_path), str(start)],
                                 stdout=subprocess.PIPE, text=True)
        try:
            assert child.stdout.readline() == 'saving\n'
            time.sleep(rng.uniform(0.02, 0.25))  # a save takes ~20 ms: land at a random point of one
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait()
            child.stdout.close()
        with warnings.catch_warnings():
            warnings.simplefilter('error')  # no file on disk is torn, so nothing is skipped
            mgr = CheckpointManager(tmp_path, keep_last=2)  # also clears the killed writer's temp file
            path, state = mgr.latest()
        assert state['step'] == mgr.step_of(path) and np.all(state['w'] == state['step'])
        assert all(p.name.startswith('ckpt-') for p in tmp_path.iterdir()), sorted(p.name for p in tmp_path.iterdir())
        start = state['step'] + 1


# --- secrets -------------------------------------------------------------------------------------

def test_api_key_never_reaches_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv('IONQ_API_KEY', SECRET)
    mgr = CheckpointManager(tmp_path)
    config = {'backend': 'ionq', 'api_key': SECRET,
              'ionq': {'apiKey': SECRET, 'token': np.frombuffer(SECRET.encode(), np.uint8)}}
    path = mgr.save(1, {'config': config, 'model_spec': {'secret_sauce': [SECRET]}})
    data = path.read_bytes()
    assert SECRET.encode() not in data and SECRET[::-1].encode() not in data
    back = mgr.load(path)
    assert back['config'] == {'backend': 'ionq', 'api_key': REDACTED, 'ionq': {'apiKey': REDACTED, 'token': REDACTED}}
    assert back['model_spec'] == {'secret_sauce': REDACTED}
    smuggled = {'note': SECRET, 'header': f'Authorization: apiKey {SECRET}', 'history': [{'msg': ('x', SECRET)}],
                'keys': {SECRET: 1}, 'bytes': np.frombuffer(SECRET.encode(), np.uint8)}
    for field, value in smuggled.items():
        with pytest.raises(ValueError, match='IONQ_API_KEY') as e:
            mgr.save(2, {'config': {'backend': 'ionq'}, 'extra': {field: value}})
        assert SECRET not in str(e.value)
    assert mgr.list() == [path]
    assert all(SECRET.encode() not in p.read_bytes() for p in tmp_path.iterdir())
    monkeypatch.setenv('IONQ_API_KEY', 'x')  # too short to be a key: not searched for
    mgr.save(3, {'text': 'x'})
