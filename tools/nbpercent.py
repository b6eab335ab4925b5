"""Round-trip notebooks through a plain-text "percent" form for bulk editing.

    python tools/nbpercent.py out nbs/00_circuits.ipynb > /tmp/00.pct   # notebook -> text
    python tools/nbpercent.py in /tmp/00.pct nbs/00_circuits.ipynb      # text -> notebook

Cells start with a marker line: `# %% id=<id>` (code) or `# %% [md] id=<id>` (markdown).
A marker without `id=` gets a fresh id. Writing back keeps the ids, and keeps the outputs of
code cells whose id and source are unchanged, so cell ids stay stable and notebooks stay the
source of truth (nbdev exports them).
"""
import re, sys, uuid
from pathlib import Path
import nbformat

_MARK = re.compile(r"^# %%(?P<md> \[md\])?(?: id=(?P<id>[A-Za-z0-9_-]+))?\s*$")


def to_text(nb_path):
    nb = nbformat.read(nb_path, as_version=4)
    parts = []
    for c in nb.cells:
        kind = " [md]" if c.cell_type == "markdown" else ""
        parts.append(f"# %%{kind} id={c.id}\n{c.source}\n")
    return "".join(parts)


def from_text(text, nb_path):
    path = Path(nb_path)
    old = {c.id: c for c in nbformat.read(path, as_version=4).cells} if path.exists() else {}
    cells, cur = [], None
    for line in text.splitlines():
        m = _MARK.match(line)
        if m:
            cur = {"md": bool(m["md"]), "id": m["id"] or uuid.uuid4().hex[:8], "lines": []}
            cells.append(cur)
        elif cur is not None:
            cur["lines"].append(line)
    nb = nbformat.v4.new_notebook()
    nb.metadata = {"kernelspec": {"display_name": "python3", "language": "python", "name": "python3"}}
    for c in cells:
        src = "\n".join(c["lines"]).strip("\n")
        if c["md"]:
            cell = nbformat.v4.new_markdown_cell(src)
        else:
            cell = nbformat.v4.new_code_cell(src)
            prev = old.get(c["id"])
            if prev is not None and prev.cell_type == "code" and prev.source == src:
                cell.outputs = prev.outputs
        cell.id = c["id"]
        nb.cells.append(cell)
    ids = [c.id for c in nb.cells]
    if len(ids) != len(set(ids)):
        raise SystemExit(f"duplicate cell ids in {nb_path}")
    nbformat.write(nb, path)


if __name__ == "__main__":
    cmd, *args = sys.argv[1:]
    if cmd == "out":
        sys.stdout.write(to_text(args[0]))
    elif cmd == "in":
        from_text(Path(args[0]).read_text(), args[1])
    else:
        raise SystemExit(__doc__)
