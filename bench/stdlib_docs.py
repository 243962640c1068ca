"""A small corpus of another domain, built offline from the installed Python standard library.

Each document is one public module, class or function docstring: title = its first line, text = the
rest. Docstrings are read with `ast` from the stdlib's source files (and cleaned like `inspect.getdoc`),
not by importing the modules: importing every stdlib module has side effects (`antigravity` opens a
browser, `this` prints, GUI toolkits start). The selection is deterministic for a given Python version:
candidates are ordered by a hash of their dotted name, which spreads the sample over many modules.
"""

import ast
import hashlib
import inspect
import json
import sysconfig
from pathlib import Path

SKIP_PARTS = {"test", "tests", "idle_test", "idlelib", "turtledemo", "site-packages", "dist-packages",
              "__pycache__", "lib2to3", "ensurepip", "pydoc_data", "tkinter", "config-3"}


def stdlib_files(root: Path | None = None) -> list[Path]:
    """The stdlib's own .py files, sorted; tests, IDLE, demos and installed packages left out."""
    root = root or Path(sysconfig.get_paths()["stdlib"])
    return sorted(p for p in root.rglob("*.py")
                  if not SKIP_PARTS & set(p.relative_to(root).parts)
                  and not any(part.startswith("config-") for part in p.relative_to(root).parts))


def docstrings(path: Path, module: str) -> list[tuple[str, str]]:
    """(dotted name, cleaned docstring) of a module and its public classes, functions and methods."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (SyntaxError, UnicodeDecodeError, ValueError):
        return []
    found = []

    def visit(node, name: str) -> None:
        doc = ast.get_docstring(node, clean=False)
        if doc:
            found.append((name, inspect.cleandoc(doc)))
        for child in getattr(node, "body", []):
            if isinstance(child, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) \
                    and not child.name.startswith("_"):
                visit(child, f"{name}.{child.name}")

    visit(tree, module)
    return found


def to_record(name: str, doc: str, min_chars: int, max_chars: int) -> dict | None:
    """title = first line, text = the rest; None for docstrings too short, too long or without a rest."""
    title, _, rest = doc.partition("\n")
    title, rest = title.strip(), rest.strip()
    if len(title.split()) < 3 or not min_chars <= len(rest) <= max_chars:
        return None
    return {"id": name, "title": title, "text": rest, "module": name.split(".")[0]}


def stdlib_records(n: int = 400, min_chars: int = 200, max_chars: int = 3000) -> list[dict]:
    """`n` documents chosen deterministically among the stdlib's docstrings (see the module docstring)."""
    root = Path(sysconfig.get_paths()["stdlib"])
    records, titles = [], set()
    for path in stdlib_files(root):
        parts = list(path.relative_to(root).with_suffix("").parts)
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        for name, doc in docstrings(path, module):
            record = to_record(name, doc, min_chars, max_chars)
            if record is not None and record["title"] not in titles:  # a repeated title cannot find its doc
                titles.add(record["title"])
                records.append(record)
    records.sort(key=lambda r: hashlib.sha256(r["id"].encode()).hexdigest())
    return records[:n]


def write_stdlib_corpus(target: Path, n: int = 400) -> list[dict]:
    records = stdlib_records(n)
    target.write_text("".join(json.dumps(r) + "\n" for r in records))
    return records


if __name__ == "__main__":
    import sys

    chosen = stdlib_records(int(sys.argv[1]) if len(sys.argv) > 1 else 400)
    print(len(chosen), "documents from", len({r["module"] for r in chosen}), "modules")
    for record in chosen[:5]:
        print(record["id"], "|", record["title"], "|", record["text"][:80].replace("\n", " "))
