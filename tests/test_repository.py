"""The repository's own promises: clean notebooks, one dependency set, the README's commands."""

import json
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_notebooks_are_committed_without_outputs():
    notebooks = sorted((ROOT / "notebooks").glob("*.ipynb"))
    assert len(notebooks) >= 5
    for path in notebooks:
        cells = json.loads(path.read_text())["cells"]
        for cell in cells:
            if cell["cell_type"] == "code":
                assert not cell.get("outputs") and cell.get("execution_count") is None, path.name


def test_notebooks_are_numbered_and_start_with_the_setup_block():
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        assert path.name[:2].isdigit() and path.name[2] == "_", path.name
        cells = json.loads(path.read_text())["cells"]
        assert "colab.research.google.com" in "".join(cells[0]["source"]), path.name
        setup = "".join(cells[1]["source"])
        assert 'IN_COLAB = "google.colab" in sys.modules' in setup, path.name
        assert any("seed_everything(config.seed)" in "".join(c["source"]) for c in cells[:5]), path.name


def test_requirements_and_environment_list_the_same_packages():
    pip = {line.strip().lower() for line in (ROOT / "requirements.txt").read_text().splitlines()
           if line.strip() and not line.startswith("#")}
    conda = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d for d in conda["dependencies"] if isinstance(d, dict))["pip"]
    assert {p.lower() for p in pip_section} == pip
    assert "torch==2.14.1" in pip and "torchvision==0.29.1" in pip


def test_readme_shows_the_two_commands_first_and_ci_runs_the_test_command():
    readme = (ROOT / "README.md").read_text()
    first_block = readme.split("```")[1]
    assert "make report" in first_block and "make test" in first_block
    assert "make test" in (ROOT / ".ci" / "run").read_text()
