"""Re-execute every tutorial in place, so the committed outputs are what it prints now.

Run from the repository root after changing a notebook or what it shows:
``python notebooks/execute.py``. The test suite (tests/test_notebooks.py) then
checks that a fresh run prints the same text.
"""

from pathlib import Path

import nbclient
import nbformat

HERE = Path(__file__).resolve().parent

if __name__ == "__main__":
    for path in sorted(HERE.glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        nbclient.NotebookClient(
            nb,
            timeout=120,
            kernel_name="python3",
            resources={"metadata": {"path": str(HERE)}},
        ).execute()
        nbformat.write(nb, path)
        print(f"executed {path.name}")
