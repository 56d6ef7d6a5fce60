"""Start Streamlit with the dashboard's modules imported and the model loaded first.

Streamlit imports a page's modules on its first run, in the server process, so without this the first
person to open any page after a start waits for torch, transformers, DuckDB and plotly to import (about
6 s on 2 cores), then for the model, then for the day's worklist (a Patient view shows the patient's place
on it: on a million patients a second or more). Here all of it is done before the server opens its port:
when `readmit app` reports the dashboard ready, the first Patient view costs only its own queries.

    python -m ui.launch run app.py --server.port 8501 ...   (the arguments of `streamlit`)
"""
from __future__ import annotations

import ast
import importlib
import sys
from pathlib import Path

from streamlit.web import cli

from ui import data

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = (ROOT / "app.py", *sorted((ROOT / "pages").glob("*.py")))


def imported_names(script: Path) -> list[str]:
    """The absolute imports of a script, read with `ast` (not run): `import a.b` gives a.b, `from a import b`
    gives a and a.b (b may be a module or a name; `preload` tells them apart)."""
    names: list[str] = []
    for node in ast.walk(ast.parse(script.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level and node.module != "__future__":
            names += [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
    return names


def preload(scripts: tuple[Path, ...] = SCRIPTS) -> list[str]:
    """Import every module the dashboard's scripts import; returns the modules imported."""
    loaded = []
    for name in dict.fromkeys(name for script in scripts for name in imported_names(script)):
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as error:
            if error.name != name:  # a module that exists failed to import one of its own: a real error
                raise
            continue  # `from package import name` where name is not a module
        loaded.append(name)
    return loaded


def main(argv: list[str]) -> int:
    preload()
    data.warm_up()  # the model and the code titles, cached for every session of this process
    data.warm_warehouse()  # the worklist index and today's list of the current warehouse version
    sys.argv = ["streamlit", *argv]
    return cli.main()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
