"""Every notebook runs top to bottom on a tiny configuration (nbclient, a real Jupyter kernel)."""

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = {
    "communication_cost": ["bytes_per_client.png", "accuracy_vs_cumulative_mb.png", "crossover.png"],
    "forgetting_plasticity": ["accuracy_matrices.png", "task_accuracy_input_tuning.png", "task_accuracy_full_fine-tuning.png",
                              "client_curves.png", "global_vs_local.png"],
}


def test_notebooks_are_committed_without_outputs():
    for name in NOTEBOOKS:
        book = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
        code = [c for c in book.cells if c.cell_type == "code"]
        assert code and all(not c.outputs and c.execution_count is None for c in code), f"{name}: strip outputs (see README)"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_and_produces_its_figures_and_tables(name, tmp_path, monkeypatch):
    monkeypatch.setenv("FEDCL_NOTEBOOK_SIZE", "tiny")
    monkeypatch.setenv("FEDCL_NOTEBOOK_OUT", str(tmp_path))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    monkeypatch.delenv("FEDCL_RESULTS_DIR", raising=False)
    book = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
    NotebookClient(book, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}).execute()
    outputs = [o for c in book.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    for figure in NOTEBOOKS[name]:
        assert (tmp_path / name / "figures" / figure).read_bytes()[:4] == b"\x89PNG", figure
    shown_images = [o for o in outputs if "image/png" in o.get("data", {})]
    tables = [o for o in outputs if "text/html" in o.get("data", {}) and "<table" in o["data"]["text/html"]]
    assert len(shown_images) >= len(NOTEBOOKS[name]) and len(tables) >= 2
