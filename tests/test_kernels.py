"""The compiled kernels: built from scratch into an empty cache, rebuilt when the cache file is damaged, skipped (numpy
path, one warning) without a compiler, and equal to the numpy plan at every benchmark size, forward and gradient."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from qstore.backends.base import LocalBackend
from qstore.gradients.adjoint import adjoint
from qstore.gradients.finite_diff import finite_diff
from qstore.gradients.shift import parameter_shift
from qstore.simulator import StatevectorSimulator
from qstore.testing import reference_circuit, reference_values

PROBE = """
import json, warnings
import numpy as np
from qstore.simulator import StatevectorSimulator
from qstore.testing import reference_circuit, reference_values
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter('always')
    c = reference_circuit(5, 2)
    sim = StatevectorSimulator()
    kernel = sim.program(c) is not None
    state = sim.statevector(c, reference_values(c, 3))
ref = StatevectorSimulator(kernel='numpy').statevector(c, reference_values(c, 3))
print(json.dumps({'kernel': kernel, 'err': float(np.abs(state - ref).max()),
                  'warnings': [str(w.message) for w in caught]}))
"""


def probe(cache_dir, **env):
    "Run PROBE in a fresh process with its own kernel cache; returns its JSON report."
    full_env = {**os.environ, 'QSTORE_KERNEL_CACHE': str(cache_dir), **env}
    out = subprocess.run([sys.executable, '-c', PROBE], env=full_env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_kernels_build_into_an_empty_cache_and_load_from_it(tmp_path):
    first = probe(tmp_path)
    assert first['kernel'] and first['err'] < 1e-13 and not first['warnings']
    libraries = list(tmp_path.glob('kernels-*.so'))
    assert len(libraries) == 1
    built = libraries[0].stat().st_mtime_ns
    again = probe(tmp_path)
    assert again['kernel'] and again['err'] < 1e-13
    assert libraries[0].stat().st_mtime_ns == built  # loaded, not rebuilt


def test_a_damaged_cache_file_is_rebuilt(tmp_path):
    probe(tmp_path)
    library = next(tmp_path.glob('kernels-*.so'))
    library.write_bytes(b'not a shared library')
    report = probe(tmp_path)
    assert report['kernel'] and report['err'] < 1e-13 and not report['warnings']
    assert library.read_bytes()[:4] == b'\x7fELF'


def test_without_a_compiler_the_numpy_path_runs_with_one_warning(tmp_path):
    report = probe(tmp_path, CC='no-such-compiler')
    assert not report['kernel'] and report['err'] == 0.0
    assert len(report['warnings']) == 1 and 'numpy path' in report['warnings'][0]
    assert not list(tmp_path.glob('kernels-*.so'))


@pytest.mark.parametrize('n, layers, batch', [(4, 2, 16), (8, 4, 32), (12, 4, 32)])
def test_kernels_equal_the_numpy_plan_at_the_benchmark_sizes(n, layers, batch):
    c = reference_circuit(n, layers)
    v = reference_values(c, batch)
    obs = [f'Z{i}' for i in range(n)] + ['X0 Y1']
    kernel, plan = LocalBackend(), LocalBackend(kernel='numpy')
    assert kernel.sv.program(c) is not None and plan.sv.program(c) is None
    np.testing.assert_allclose(kernel.sv.statevector(c, v), plan.sv.statevector(c, v), atol=1e-13)
    cot = np.random.default_rng(n).normal(size=(batch, len(obs)))
    gk = adjoint(c, v, obs, kernel, cotangent=cot)
    gp = adjoint(c, v, obs, plan, cotangent=cot)
    np.testing.assert_allclose(gk.jacobian, gp.jacobian, atol=1e-12)
    np.testing.assert_allclose(gk.value, gp.value, atol=1e-13)


def test_kernel_gradients_match_finite_differences_and_parameter_shift():
    c = reference_circuit(8, 4)
    v = reference_values(c, 4)
    obs = ['Z0', 'Z3 Z5']
    ja = adjoint(c, v, obs, LocalBackend(), wrt=None).jacobian
    np.testing.assert_allclose(ja, finite_diff(c, v, obs, 'local', wrt=None, h=1e-5).jacobian, atol=1e-7)
    shift = parameter_shift(c, v, obs, LocalBackend(), wrt=None).jacobian
    np.testing.assert_allclose(ja, shift, atol=1e-12)
    np.testing.assert_allclose(shift, parameter_shift(c, v, obs, LocalBackend(kernel='numpy'), wrt=None).jacobian,
                               atol=1e-13)


def test_kernel_setting_is_checked():
    with pytest.raises(ValueError, match="'auto' or 'numpy'"):
        StatevectorSimulator(kernel='fast')
