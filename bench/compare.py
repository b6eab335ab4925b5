"""Regression guard: re-time a stored benchmark's qstore workloads, report new / stored (`qstore bench --compare`).

    OPENBLAS_NUM_THREADS=1 python bench/compare.py --compare bench/results/peers.json [--repeat 10] [--threshold 1.5]

Reads a JSON written by a `bench/*.py` script (`simulator`, `gradients` or `peers`), times the same qstore workloads
again at the stored sizes (peers are not re-run: only qstore's own columns are compared), and prints one line per
timing with the ratio new / stored. Any ratio above the threshold is flagged SLOWER and makes the exit code 1. Not
for CI: the stored run's machine and load differ from this one; it is the tool for checking a change.
"""
import argparse
import json
import sys
from pathlib import Path

import numpy as np
from common import print_table, time_call

TIMING_SUFFIXES = ('_ms', '_s')
IDENTITY = ('n', 'layers', 'batch', 'readout', 'method')


def _timings(row: dict, benchmark: str) -> dict:
    "The comparable timings (seconds, not rates) of a stored row: medians only, and for peers only qstore's own."
    keys = {k: v for k, v in row.items()
            if k.endswith(TIMING_SUFFIXES) and not k.endswith('_per_s') and isinstance(v, (int, float))}
    if benchmark == 'peers': return {k: v for k, v in keys.items() if k.startswith('qstore_') and 'shift' not in k}
    return {k: v for k, v in keys.items() if not k.startswith('min_')}


def rerun(benchmark: str, rows: list[dict], repeat: int) -> list[dict]:
    "The same benchmark's rows, timed now at the stored sizes."
    sizes = tuple(dict.fromkeys((r['n'], r['layers'], r['batch']) for r in rows))
    if benchmark == 'simulator':
        from simulator import simulator_benchmark
        return simulator_benchmark(sizes, repeat)
    if benchmark == 'gradients':
        from gradients import gradient_benchmark
        methods = tuple(dict.fromkeys(r['method'] for r in rows))
        return gradient_benchmark(sizes, methods, repeat)
    if benchmark == 'peers':
        from peers import qstore_forward, qstore_gradient, workload
        out = []
        for r in rows:
            c, v, _, _, obs, y = workload(r['n'], r['layers'], r['batch'], r['readout'])
            new = {k: r[k] for k in IDENTITY if k in r}
            new['qstore_fwd_s'] = time_call(qstore_forward(c, v, obs), repeat, 1)['median_s']
            new['qstore_grad_s'] = time_call(qstore_gradient(c, r['layers'], v, obs, y), repeat, 1)['median_s']
            if 'qstore_fwd_c64_s' in r:
                new['qstore_fwd_c64_s'] = time_call(qstore_forward(c, v, obs, np.complex64), repeat, 1)['median_s']
            out.append(new)
        return out
    raise ValueError(f"cannot compare a {benchmark!r} benchmark; stored runs of simulator, gradients or peers can be")


def compare(stored: dict, new_rows: list[dict], threshold: float = 1.5) -> list[dict]:
    "One line per stored timing: its row's identity, the stored and new seconds, new / stored, and a SLOWER flag."
    lines = []
    for old in stored['rows'] + stored.get('large', []):
        ident = {k: old[k] for k in IDENTITY if k in old}
        new = next((r for r in new_rows if all(r.get(k) == v for k, v in ident.items())), None)
        if new is None: continue
        for key, before in _timings(old, stored['benchmark']).items():
            if key not in new or not before: continue
            ratio = new[key] / before
            lines.append({**ident, 'timing': key, 'stored': before, 'new': new[key], 'ratio': ratio,
                          'flag': 'SLOWER' if ratio > threshold else ''})
    return lines


COLUMNS = [('n', 'n', '{}'), ('layers', 'L', '{}'), ('batch', 'B', '{}'), ('readout', 'readout', '{}'),
           ('method', 'method', '{}'), ('timing', 'timing', '{}'), ('stored', 'stored', '{:.3g}'),
           ('new', 'new', '{:.3g}'), ('ratio', 'new/stored', '{:.2f}'), ('flag', '', '{}')]


def main(argv: list[str] | None = None) -> int:
    "Compare against a stored run; exit 1 when any timing is more than `--threshold` times slower."
    p = argparse.ArgumentParser(prog='qstore bench --compare', description='Ratios against a stored benchmark run.')
    p.add_argument('--compare', required=True, metavar='JSON', help='a stored result, e.g. bench/results/peers.json')
    p.add_argument('--repeat', type=int, default=10, help='timed runs per measurement (median compared)')
    p.add_argument('--threshold', type=float, default=1.5, help='flag timings this many times slower')
    a = p.parse_args(argv)
    path = Path(a.compare)
    if not path.is_file(): raise SystemExit(f"qstore bench --compare: no stored result at {path}")
    stored = json.loads(path.read_text())
    if 'benchmark' not in stored or 'rows' not in stored:
        raise SystemExit(f"qstore bench --compare: {path} is not a bench/ result (no 'benchmark' and 'rows')")
    lines = compare(stored, rerun(stored['benchmark'], stored['rows'] + stored.get('large', []), a.repeat),
                    a.threshold)
    print_table(lines, COLUMNS)
    slower = [x for x in lines if x['flag']]
    print(f"\n{len(lines)} timings compared with {path}; {len(slower)} more than {a.threshold}x slower")
    return 1 if slower else 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
