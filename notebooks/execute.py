"""Re-execute every tutorial in place, so the committed outputs are what it prints now.

Run from the repository root after changing a notebook or what it shows:
``python notebooks/execute.py`` (every notebook) or ``python notebooks/execute.py
04_scale_out`` (the named ones). The test suite (tests/test_notebooks.py) then
checks that a fresh run prints the same text.
"""

import sys
from pathlib import Path

import nbclient
import nbformat

HERE = Path(__file__).resolve().parent

if __name__ == "__main__":
    names = sys.argv[1:]
    paths = (
        [HERE / f"{Path(n).stem}.ipynb" for n in names]
        if names
        else sorted(HERE.glob("*.ipynb"))
    )
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        nbclient.NotebookClient(
            nb,
            timeout=120,
            kernel_name="python3",
            resources={"metadata": {"path": str(HERE)}},
        ).execute()
        nbformat.write(nb, path)
        print(f"executed {path.name}")
