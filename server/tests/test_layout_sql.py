"""Only pipacs.index talks to SQLite: no other module runs SQL or reaches the connection."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pipacs

SRC = Path(pipacs.__file__).parent
INDEX = SRC / "index"

# What only the index may touch: its connections and its write path.
PRIVATE = {"conn", "_conn", "_writer", "_writer_conn", "_write", "_grouped", "_COLS", "_resource"}
CURSOR_CALLS = {"execute", "executemany", "executescript"}
# The opening words of an SQL statement, written as the index writes them (upper case).
SQL_TEXT = re.compile(
    r"^\s*(SELECT\b.*\bFROM\b|INSERT (OR \w+ )?INTO\b|UPDATE \w+ SET\b|DELETE FROM\b|PRAGMA \w"
    r"|CREATE (UNIQUE )?(TABLE|INDEX)\b|DROP (TABLE|INDEX)\b|WITH RECURSIVE\b|SAVEPOINT\b"
    r"|BEGIN( IMMEDIATE| EXCLUSIVE)?$|COMMIT$|ROLLBACK\b)",
    re.S,
)


def _reaches_index(node: ast.expr) -> bool:
    """Whether `node` names an index (`index`, `context.index`, `self.context.index`)."""
    return (isinstance(node, ast.Name) and node.id in ("index", "idx")) or (
        isinstance(node, ast.Attribute) and node.attr == "index"
    )


def _private(node: ast.Attribute) -> bool:
    """Whether `node` reaches the index's connection, write path or private members."""
    if _reaches_index(node.value):
        return node.attr.startswith("_") or node.attr in PRIVATE | {"write", "grouped"}
    own = isinstance(node.value, ast.Name) and node.value.id == "self"
    return node.attr in PRIVATE and not (own and node.attr in ("_write", "_writer"))


def offences(source: str, name: str) -> list[str]:
    """Every place in `source` that runs SQL or reaches into the index, as "name:line: why"."""
    found: list[tuple[int, str]] = []
    tree = ast.parse(source, name)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, "imports sqlite3") for a in node.names if a.name == "sqlite3"]
        elif isinstance(node, ast.ImportFrom) and node.module == "sqlite3":
            found.append((node.lineno, "imports from sqlite3"))
        elif isinstance(node, ast.Attribute) and _private(node):
            found.append((node.lineno, f"reaches the index's {node.attr}"))
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            if node.func.attr in CURSOR_CALLS:
                found.append((node.lineno, f"calls {node.func.attr}()"))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and (
            SQL_TEXT.match(node.value)
        ):
            found.append((node.lineno, f"holds SQL {node.value.strip()[:40]!r}"))
    lines = source.splitlines()
    return [f"{name}:{n}: {why}: {lines[n - 1].strip()}" for n, why in sorted(set(found))]


def test_no_sql_outside_the_index() -> None:
    bad: list[str] = []
    for path in sorted(SRC.rglob("*.py")):
        if INDEX in path.parents:
            continue
        bad += offences(path.read_text(encoding="utf-8"), str(path.relative_to(SRC.parent)))
    assert not bad, "SQL belongs in pipacs/index/ (give Index a method):\n" + "\n".join(bad)


def test_the_index_is_found_by_the_check() -> None:
    """The check sees the index's own SQL (so it would see it anywhere else)."""
    found = offences((INDEX / "queries.py").read_text(encoding="utf-8"), "queries.py")
    assert any("calls execute()" in f for f in found)
    assert any("holds SQL 'SELECT" in f for f in found)
    assert any("reaches the index's _conn" in f for f in found)


def test_each_kind_of_offence_is_named_with_its_line() -> None:
    source = "\n".join([
        "import sqlite3",
        "from sqlite3 import Error",
        "rows = context.index.conn.execute('x')",
        "sql = 'SELECT public_id FROM resources WHERE parent=?'",
        "with context.index._write() as c:",
        "    c.executemany(q, [])",
        "idx._resource(row)",
        "x = 'DELETE FROM metadata'",
        "y = 'PRAGMA wal_checkpoint(TRUNCATE)'",
        "z = 'Select the first one from the list'",  # prose, not SQL
        "self._write(raw)",  # a module's own method of that name
        "w = self.context.index.write()",  # the old public write transaction
    ])
    found = offences(source, "m.py")
    lines = {int(f.split(":")[1]) for f in found}
    assert lines == set(range(1, 10)) | {12}, found
    assert "m.py:3: reaches the index's conn: rows = context.index.conn.execute('x')" in found
