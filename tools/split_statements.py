"""Put statements joined by `;` on their own lines, in `.py` files and in notebook code cells.

    python tools/split_statements.py PATH ...          # files or directories (.py, .ipynb), rewritten in place
    python tools/split_statements.py --check PATH ...  # list what would change; exit 1 if anything would

`a; b` becomes two lines at the same indentation; a trailing `;` is dropped. A one-line compound statement whose
body is joined by `;` (`if x: a; b`, `for i in r: a; b`, `def f(): a; b`) gets its body as an indented block, so
the meaning is kept. A trailing comment stays with the last statement. Running it twice changes nothing. Notebook
cells keep their ids and outputs; IPython magics (`%`/`!` lines) are left alone; a cell that does not tokenize is
reported and skipped.
"""
import io
import json
import sys
import tokenize
from pathlib import Path

COMPOUND = {'if', 'elif', 'else', 'for', 'while', 'with', 'def', 'class', 'try', 'except', 'finally', 'async', 'case'}
INDENT = '    '


def _logical_lines(src: str):
    "Token lists of the logical lines of `src` (NEWLINE-terminated; comment-only lines excluded)."
    line = []
    for tok in tokenize.generate_tokens(io.StringIO(src).readline):
        if tok.type in (tokenize.INDENT, tokenize.DEDENT, tokenize.ENCODING, tokenize.ENDMARKER):
            continue
        if tok.type == tokenize.NL and not line:
            continue
        if tok.type == tokenize.COMMENT and not line:
            continue
        line.append(tok)
        if tok.type == tokenize.NEWLINE:
            yield line
            line = []
    if line:
        yield line


def _header_colon(toks):
    "The `:` ending a compound statement's header, when `toks` is a one-line compound statement; else None."
    if toks[0].type != tokenize.NAME or toks[0].string not in COMPOUND:
        return None
    depth = 0
    for tok in toks[1:]:
        if tok.type == tokenize.OP and tok.string in '([{':
            depth += 1
        elif tok.type == tokenize.OP and tok.string in ')]}':
            depth -= 1
        elif tok.type == tokenize.OP and tok.string == ':' and depth == 0:
            return tok
    return None


def _offsets(lines: list[str]):
    "Map a token's (row, col) to an offset in the joined text."
    starts = [0]
    for line in lines:
        starts.append(starts[-1] + len(line))
    return lambda pos: starts[pos[0] - 1] + pos[1]


def split_source(src: str) -> str:
    "`src` with every `;`-joined statement on its own line (see the module docstring)."
    lines = src.splitlines(keepends=True)
    text = ''.join(lines)
    masked = ''.join('#' + line[1:] if line.lstrip()[:1] in ('%', '!') else line for line in lines)
    at = _offsets(lines)
    edits = []  # (start offset, end offset, replacement), applied bottom-up
    for toks in _logical_lines(masked if masked.endswith('\n') else masked + '\n'):
        semis = [t for t in toks if t.type == tokenize.OP and t.string == ';']
        if not semis:
            continue
        body = [t for t in toks if t.type not in (tokenize.NEWLINE, tokenize.NL)]
        comment = body.pop() if body[-1].type == tokenize.COMMENT else None
        first_line = lines[toks[0].start[0] - 1]
        indent = first_line[:len(first_line) - len(first_line.lstrip())]
        cuts = [toks[0].start] + [p for t in semis for p in (t.start, t.end)] + [body[-1].end]
        segments = [text[at(a):at(b)].strip() for a, b in zip(cuts[::2], cuts[1::2])]
        out, colon = [], _header_colon(toks)
        if colon is not None:
            head_end = at(colon.end) - at(toks[0].start)
            header, segments[0] = segments[0][:head_end], segments[0][head_end:].strip()
            if len([s for s in segments if s]) == 1:  # `if x: a;` only loses its `;`
                segments[0] = f'{header} {segments[0]}'
            else:
                out.append(indent + header)
                indent += INDENT
        out += [indent + s for s in segments if s]
        if comment is not None:
            out[-1] += '  ' + comment.string
        end = at((comment or body[-1]).end)
        edits.append((at((toks[0].start[0], 0)), end, '\n'.join(out)))
    for start, end, new in reversed(edits):
        text = text[:start] + new + text[end:]
    return text


def split_notebook(nb: dict, name: str = 'notebook') -> bool:
    "Split statements in the code cells of notebook JSON `nb` in place; whether anything changed."
    changed = False
    for cell in nb['cells']:
        if cell['cell_type'] != 'code':
            continue
        src = ''.join(cell['source'])
        try:
            new = split_source(src)
        except (tokenize.TokenError, SyntaxError, IndentationError) as e:
            print(f"{name} cell {cell.get('id')}: skipped, does not tokenize ({e})", file=sys.stderr)
            continue
        if new != src:
            parts = new.split('\n')
            cell['source'] = [p + '\n' for p in parts[:-1]] + ([parts[-1]] if parts[-1] else [])
            changed = True
    return changed


def split_file(path: Path, write: bool = True) -> bool:
    "Split statements in one `.py` or `.ipynb` file; whether it changed (written back when `write`)."
    text = path.read_text()
    if path.suffix == '.ipynb':
        nb = json.loads(text)
        if not split_notebook(nb, str(path)):
            return False
        new = json.dumps(nb, indent=1, ensure_ascii=False) + '\n'
    else:
        new = split_source(text)
        if new == text:
            return False
    if write:
        path.write_text(new)
    return True


def main(args: list[str]) -> int:
    check = '--check' in args
    paths = [Path(a) for a in args if a != '--check']
    files = [f for p in paths for f in (sorted(p.rglob('*.py')) + sorted(p.rglob('*.ipynb')) if p.is_dir() else [p])]
    changed = [f for f in files if '.ipynb_checkpoints' not in f.parts and split_file(f, write=not check)]
    for f in changed:
        print(f"{'would split' if check else 'split'} {f}")
    return 1 if check and changed else 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
