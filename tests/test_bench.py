"The benchmark scripts in bench/: helpers and each workload on a small size (the timings themselves are not tested)."
import json

import pytest



@pytest.fixture(scope='module')
def bench(bench_script):
    "The bench/ scripts these tests use, by name."
    return {name: bench_script(name) for name in ('common', 'simulator', 'gradients', 'training')}


def test_time_call(bench):
    r = bench['common'].time_call(lambda: sum(range(100)), repeat=5, warmup=1)
    assert r['runs'] == 5 and r['min_s'] <= r['median_s']


def test_report_writes_table_and_json(bench, tmp_path, capsys):
    rows = [{'a': 1, 'b': 0.5}, {'a': 22, 'b': None}]
    assert bench['common'].report('demo', rows, [('a', 'A', '{}'), ('b', 'B', '{:.2f}')], tmp_path / 'r.json') == 0
    assert capsys.readouterr().out.splitlines()[:4] == [' A     B', '--  ----', ' 1  0.50', '22     -']
    payload = json.loads((tmp_path / 'r.json').read_text())
    assert payload['benchmark'] == 'demo' and payload['rows'] == rows and payload['machine']['cpus'] > 0


def test_simulator_benchmark(bench):
    rows = bench['simulator'].simulator_benchmark(sizes=((3, 1, 4),), repeat=2)
    assert len(rows) == 2 and rows[0]['forward_ms'] > 0


def test_gradient_benchmark(bench):
    gradients = bench['gradients']
    rows = gradients.gradient_benchmark(sizes=((3, 1, 3),), repeat=1)
    assert [r['method'] for r in rows] == list(gradients.GRAD_METHODS)
    assert rows[1]['circuits'] == 3 * (1 + 2 * 6)  # parameter shift: B (1 + 2P) circuits


def test_training_benchmark(bench):
    training = bench['training']
    rows = training.training_benchmark(epochs=1, setups=training.TRAIN_SETUPS[:1])
    assert rows[0]['method'] == 'adjoint' and rows[0]['circuits_per_epoch'] > 0
