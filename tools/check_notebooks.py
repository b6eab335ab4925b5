"""Check the notebooks in `nbs/` for markup and cell-structure rules nbdev relies on.

    python tools/check_notebooks.py [NOTEBOOK_OR_DIR ...]   # default: nbs/; exit 1 on any failure

Each failure is printed as `notebook cell-id: reason`. A notebook fails on:

- a markdown line starting with `# #` (a heading written as a comment: the page shows "# Title");
- a second top-level `# ` heading (only the first markdown cell holds the `# Title`; prose starting with `# `
  renders as a giant heading);
- a code cell that mixes import statements with other code (nbdev's doc processing runs the import cells of a
  page on their own; `#|` directives and magics are ignored, `from __future__` counts as an import);
- an export cell over `MAX_EXPORT_LINES` lines.
"""
import ast
import sys
from collections import Counter
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
MAX_EXPORT_LINES = 100


def _code_without_directives(src: str) -> str:
    "Cell source with `#|` directives and IPython magics/shell lines blanked (line numbers kept)."
    skip = ('#|', '%', '!')
    return '\n'.join('' if line.lstrip().startswith(skip) else line for line in src.splitlines())


def _is_export(src: str) -> bool:
    "Whether a code cell is exported to the package (`#| export`, `#| exports`, `#| exporti`)."
    directives = [line[2:].split() for line in src.splitlines() if line.startswith('#|')]
    return any(d and d[0] in ('export', 'exports', 'exporti') for d in directives)


def mixed_imports(src: str) -> str | None:
    "Why a code cell mixes imports with other code, or None if it holds only imports or no imports."
    try:
        body = ast.parse(_code_without_directives(src)).body
    except SyntaxError as e:
        return f'does not parse ({e.msg}, line {e.lineno})'
    imports = [s for s in body if isinstance(s, (ast.Import, ast.ImportFrom))]
    if not imports or len(imports) == len(body):
        return None
    other = next(s for s in body if not isinstance(s, (ast.Import, ast.ImportFrom)))
    return f'mixes imports (line {imports[0].lineno}) with other code (line {other.lineno}); split the cell'


def check_notebook(path) -> list[tuple[str, str, str]]:
    "Failures in one notebook as (kind, cell id, reason)."
    nb = nbformat.read(path, as_version=4)
    failures, seen_title = [], False
    for cell in nb.cells:
        src = cell.source
        if cell.cell_type == 'markdown':
            for i, line in enumerate(src.splitlines(), 1):
                if line.startswith('# #'):
                    failures.append(('heading', cell.id, f"markdown line {i} starts with '# #': {line[:60]!r}"))
                elif line.startswith('# '):
                    if seen_title:
                        failures.append(('title', cell.id, f"markdown line {i} is a second '# ' title: {line[:60]!r}"))
                    seen_title = True
            seen_title = seen_title or bool(src.strip())
        elif cell.cell_type == 'code':
            why = mixed_imports(src)
            if why:
                failures.append(('imports', cell.id, why))
            n = len(src.splitlines())
            if _is_export(src) and n > MAX_EXPORT_LINES:
                failures.append(('length', cell.id, f'export cell has {n} lines (max {MAX_EXPORT_LINES})'))
    return failures


def notebooks(args: list[str]) -> list[Path]:
    "The notebooks named by `args` (files or directories), default all of `nbs/`."
    paths = []
    for arg in args or [str(ROOT / 'nbs')]:
        p = Path(arg)
        found = sorted(p.rglob('*.ipynb')) if p.is_dir() else [p]
        paths += [f for f in found if '.ipynb_checkpoints' not in f.parts]
    return paths


def main(args: list[str]) -> int:
    counts, paths = Counter(), notebooks(args)
    for path in paths:
        for kind, cell_id, reason in check_notebook(path):
            counts[kind] += 1
            print(f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path} cell {cell_id}: {reason}")
    if counts:
        print('FAIL:', ', '.join(f'{n} {kind}' for kind, n in sorted(counts.items())))
    else:
        print(f'ok: {len(paths)} notebooks')
    return 1 if counts else 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
