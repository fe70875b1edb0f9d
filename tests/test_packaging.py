"""The project's declared dependencies: pyproject.toml and environment.yml agree; the CLI is wired."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
# conda-forge names that differ from the PyPI distribution they stand for
CONDA_TO_PIP = {"pytorch": "torch", "distributed": "dask[distributed]"}


def _pyproject_requirements() -> dict[str, str]:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    reqs = data["project"]["dependencies"] + [r for extra in data["project"]["optional-dependencies"].values()
                                              for r in extra]
    out = {}
    for text in reqs:
        r = Requirement(text)
        name = r.name.lower() + (f"[{','.join(sorted(r.extras))}]" if r.extras else "")
        out[name] = str(r.specifier)
    return out


def _conda_requirements() -> dict[str, str]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    out = {}
    for dep in env["dependencies"]:
        items = dep["pip"] if isinstance(dep, dict) else [dep]
        for text in items:
            if text.startswith("-e") or text in ("pip",) or text.startswith("python="):
                continue
            m = re.fullmatch(r"([A-Za-z0-9_.\-]+)(.*)", text.strip())
            name, spec = m.group(1).lower(), m.group(2).strip()
            if name == "dask":  # conda's dask + distributed together are pip's dask[distributed]
                continue
            out[CONDA_TO_PIP.get(name, name)] = str(Requirement(f"x{spec}").specifier)
    return out


def test_environment_yml_matches_pyproject():
    pip, conda = _pyproject_requirements(), _conda_requirements()
    assert set(pip) == set(conda), f"only in pyproject: {set(pip) - set(conda)}; only in environment.yml: {set(conda) - set(pip)}"
    for name, spec in pip.items():
        assert conda[name] == spec, f"{name}: pyproject says {spec!r}, environment.yml says {conda[name]!r}"


def test_one_python_floor_everywhere():
    """pyproject's requires-python, environment.yml, ruff's target and the README name one version."""
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    floor = re.fullmatch(r">=(3\.\d+)", data["project"]["requires-python"]).group(1)
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert f"python={floor}" in env["dependencies"]
    assert data["tool"]["ruff"]["target-version"] == "py" + floor.replace(".", "")
    readme = (ROOT / "README.md").read_text()
    assert f"Python {floor}+" in readme and not re.search(rf"Python 3\.(?!{floor[2:]})\d+\+", readme)
    assert sys.version_info >= tuple(int(x) for x in floor.split("."))


def test_environment_yml_installs_project():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert "-e ." in pip_section


def test_console_script_and_module_entry_agree():
    help_module = subprocess.run([sys.executable, "-m", "padim_lib", "--help"], capture_output=True, text=True)
    assert help_module.returncode == 0, help_module.stderr
    for command in ("synth", "download", "fit", "evaluate", "book", "sweep"):
        assert command in help_module.stdout
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert data["project"]["scripts"]["padim"] == "padim_lib.cli:main"


def test_ci_calls_the_readme_test_command():
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    readme = (ROOT / "README.md").read_text()
    assert "make book" in readme and "make test" in readme


def _locked() -> dict[str, str]:
    out = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        m = re.fullmatch(r"([A-Za-z0-9_.\-]+)==(\S+)", line.strip())
        if m:
            out[re.sub(r"[-_.]+", "-", m.group(1)).lower()] = m.group(2)
    return out


def test_the_lock_covers_every_declared_dependency_within_its_range():
    locked = _locked()
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    reqs = data["project"]["dependencies"] + [r for extra in data["project"]["optional-dependencies"].values()
                                              for r in extra]
    for text in reqs:
        r = Requirement(text)
        names = [r.name] + (["distributed"] if r.name == "dask" and "distributed" in r.extras else [])
        for name in names:
            key = re.sub(r"[-_.]+", "-", name).lower()
            assert key in locked, f"{name} is declared in pyproject.toml but not pinned in requirements.lock"
        assert r.specifier.contains(locked[re.sub(r"[-_.]+", "-", r.name).lower()], prereleases=True), (
            f"requirements.lock pins {r.name}=={locked[r.name.lower()]}, outside pyproject's {r.specifier}")


def test_make_installs_from_the_lock():
    makefile = (ROOT / "Makefile").read_text()
    assert "-r requirements.lock" in makefile
