"""The repository's own promises: numbered notebooks, one dependency set, the README's commands.

That the committed notebooks are clean (with or without stored outputs) is checked in
test_notebook_lessons.py.
"""

import ast
import json
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


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


def test_package_imports_point_down_the_documented_order():
    """Each module imports (at the top or inside a function) only modules listed before it in
    the package docstring, so the package has no import cycle; and only notebooks, tests and
    users import the ``data`` command line's re-exports."""
    docstring = ast.get_docstring(ast.parse((ROOT / "helpers" / "__init__.py").read_text()))
    order = re.findall(r"``(\w+)``", docstring.split("what each owns):", 1)[1])
    modules = {p.stem: [p] for p in (ROOT / "helpers").glob("*.py") if p.stem != "__init__"}
    modules["webapp"] = sorted((ROOT / "helpers" / "webapp").glob("*.py"))
    assert sorted(modules) == sorted(order), "the package docstring must list every module once"
    upward = set()
    for name, files in modules.items():
        for path in files:
            relative = ast.parse(path.read_text())
            for node in ast.walk(relative):
                if isinstance(node, ast.Import):  # import helpers.x
                    targets = [a.name.split(".")[1] for a in node.names
                               if a.name.startswith("helpers.")]
                elif not isinstance(node, ast.ImportFrom):
                    continue
                elif node.level == 0:  # from helpers.x import y, from helpers import x
                    module = node.module or ""
                    if module != "helpers" and not module.startswith("helpers."):
                        continue
                    targets = ([module.split(".")[1]] if "." in module
                               else [a.name for a in node.names])
                elif name == "webapp" and node.level == 1:
                    continue  # within the webapp package
                else:
                    targets = [node.module.split(".")[0]] if node.module else [a.name for a in node.names]
                for target in (t for t in targets if t in modules and t != name):
                    assert not (target == "data" and name != "data"), f"{path.name} imports data"
                    if order.index(target) >= order.index(name):
                        upward.add((name, target))
    assert upward == set(), upward

