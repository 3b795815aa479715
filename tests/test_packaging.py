"""Packaging: the wheel holds every package, the presets, the analyses, py.typed and the LICENSE;
setuptools builds it without a warning; extras are used; package data is read with importlib.resources."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def _source_packages() -> set[str]:
    """Dotted names of every folder under repana/ that holds Python modules or data files."""
    found = set()
    for folder in [ROOT / "repana", *sorted(p for p in (ROOT / "repana").rglob("*") if p.is_dir())]:
        if "__pycache__" in folder.parts:
            continue
        if any(f.suffix in (".py", ".toml") for f in folder.iterdir() if f.is_file()):
            found.add(".".join(folder.relative_to(ROOT).parts))
    return found


def test_every_package_is_listed():
    listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
    assert _source_packages() <= listed, sorted(_source_packages() - listed)
    assert "repana.meta.presets" in listed and "repana._analyses" in listed


def test_license_metadata_is_spdx_and_the_file_exists():
    project = PYPROJECT["project"]
    assert project["license"] == "MIT" and project["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert text.startswith("MIT License") and "WITHOUT WARRANTY OF ANY KIND" in text
    assert not any(c.startswith("License ::") for c in project["classifiers"])  # PEP 639: the expression only
    assert "Typing :: Typed" in project["classifiers"] and project["urls"]


def test_every_extra_is_used():
    """Each optional dependency (the test extra aside) is imported by repana's code, or by the tests that
    exercise repana on it (transformers: real Hugging Face models built from a config)."""
    source = "\n".join(p.read_text(encoding="utf-8") for folder in ("repana", "tests")
                       for p in (ROOT / folder).rglob("*.py"))
    import_names = {"tensorboard": "tensorboard", "argcomplete": "argcomplete"}
    for extra, requirements in PYPROJECT["project"]["optional-dependencies"].items():
        if extra == "test":
            continue
        for requirement in requirements:
            distribution = re.split(r"[<>=!~\[; ]", requirement)[0]
            module = import_names.get(distribution, distribution.replace("-", "_"))
            assert re.search(rf"^\s*import {module}\b|^\s*from {module}\b", source, re.M), (extra, requirement)


def test_resources_find_the_analyses_presets_and_paper_data_in_the_source_tree():
    from repana.meta.config import list_presets
    from repana.resources import analyses_files, paper_files, preset_files

    assert sorted(f.name for f in analyses_files()) == sorted(p.name for p in (ROOT / "analyses").glob("*.toml"))
    assert sorted(preset_files()) == list_presets()
    assert "iterations" in preset_files()["quick"].read_text(encoding="utf-8")
    assert sorted(paper_files()) == ["claims.toml", "figures.toml", "source.toml", "tables.toml", "text.toml"]
    assert "44.5 ± 0.8" in paper_files()["tables.toml"].read_text(encoding="utf-8")


def test_wheel_contents_and_no_setuptools_warning(tmp_path):
    """Build the wheel from a copy of the source tree (no build isolation: the installed setuptools)."""
    setuptools = pytest.importorskip("setuptools")
    major = int(setuptools.__version__.split(".")[0])
    if major < 77:
        pytest.skip(f"setuptools {setuptools.__version__} predates SPDX license expressions (77)")
    source = tmp_path / "src"
    shutil.copytree(ROOT / "repana", source / "repana", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "analyses", source / "analyses")
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    code = ("import sys; from setuptools import build_meta; "
            "print(build_meta.build_wheel(sys.argv[1]))")
    done = subprocess.run([sys.executable, "-W", "always", "-c", code, str(tmp_path / "dist")], cwd=source,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    log = done.stdout + done.stderr
    for warning in ("SetuptoolsDeprecationWarning", "is absent from the `packages`", "license"):
        lines = [line for line in log.splitlines() if warning in line and "adding" not in line]
        assert not lines, lines
    wheel = tmp_path / "dist" / done.stdout.strip().splitlines()[-1]
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        metadata = archive.read("repana-0.1.0.dist-info/METADATA").decode()
    assert "repana/py.typed" in names and "repana-0.1.0.dist-info/licenses/LICENSE" in names
    presets = {n for n in names if n.startswith("repana/meta/presets/") and n.endswith(".toml")}
    assert {Path(n).stem for n in presets} == {p.stem for p in (ROOT / "repana/meta/presets").glob("*.toml")}
    analyses = {Path(n).name for n in names if n.startswith("repana/_analyses/") and n.endswith(".toml")}
    assert analyses == {p.name for p in (ROOT / "analyses").glob("*.toml")}
    paper = {Path(n).name for n in names if n.startswith("repana/analysis/paper/") and n.endswith(".toml")}
    assert paper == {p.name for p in (ROOT / "repana/analysis/paper").glob("*.toml")} and "tables.toml" in paper
    for package in PYPROJECT["tool"]["setuptools"]["packages"]:
        folder = package.replace(".", "/") + "/"
        assert any(n.startswith(folder) for n in names), package
    assert "License-Expression: MIT" in metadata and "License-File: LICENSE" in metadata
    assert "Provides-Extra: tensorboard" in metadata and "Provides-Extra: sklearn" not in metadata
    # Installed from the wheel (unpacked, as pip lays it out), repana finds its paper data through importlib.resources.
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    code = ("import repana; from repana.resources import paper_files; from repana.analysis import paper_values as pv; "
            "print(repana.__file__); print(sorted(paper_files())); "
            "print(pv.value('Table 1', 'none', pv.MINI_5).printed)")
    env = {**os.environ, "PYTHONPATH": str(site)}
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    module, files, cell = done.stdout.splitlines()
    assert Path(module).is_relative_to(site)
    assert files == str(["claims.toml", "figures.toml", "source.toml", "tables.toml", "text.toml"])
    assert cell == "61.7 ± 0.6"
