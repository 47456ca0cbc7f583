"""The package installs: a wheel holds the components, environments and shipped recipes, and the
installed `slmforge` validates and runs the tiny demo from a folder outside the repository."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# What the build reads; the links of src/slmforge/resources/ point at the top-level folders.
SOURCES = ("pyproject.toml", "README.md", "src", "components", "environments", "pipelines")


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh virtual environment holding only the wheel; the dependencies come from this one (a .pth
    line with its site-packages: a plain path, so its editable slmforge is not picked up)."""
    root = tmp_path_factory.mktemp("wheel")
    tree = root / "tree"  # built from a copy: the build's build/ and egg-info stay out of the checkout
    tree.mkdir()
    for name in SOURCES:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, tree / name, symlinks=True,
                            ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(source, tree / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(root / "dist"), str(tree)], check=True, capture_output=True, timeout=300)
    wheel = next((root / "dist").glob("slmforge-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    for shipped in ("slmforge/resources/components/finetune.yml", "slmforge/resources/environments/conda-cpu.yml",
                    "slmforge/resources/pipelines/demo.json", "slmforge/data/tones.jsonl"):
        assert shipped in names

    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q",
                    "--no-deps", str(wheel)], check=True, capture_output=True, timeout=300)
    site = Path(subprocess.run([str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    (site / "zz-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return venv


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "SLMFORGE_COMPONENTS_DIR")}
    env.update(SLMFORGE_HOME=str(tmp_path / "home"), HOME=str(tmp_path / "user"), MLFLOW_TRACKING_URI="")
    return env


def test_the_installed_package_is_the_wheel_s(installed, tmp_path):
    where = tmp_path / "elsewhere"
    where.mkdir()
    done = subprocess.run([str(installed / "bin" / "python"), "-c",
                           "import slmforge, slmforge.resources as r; print(slmforge.__file__); print(r.components_dir())"],
                          cwd=where, env=_env(tmp_path), capture_output=True, text=True, check=True)
    module, components = done.stdout.split()
    assert Path(module).is_relative_to(installed) and Path(components).is_relative_to(installed)
    assert not Path(module).is_relative_to(REPO)


@pytest.mark.slow
def test_installed_slmforge_runs_the_demo_from_outside_the_repo(installed, tmp_path):
    where = tmp_path / "elsewhere"
    where.mkdir()
    env = _env(tmp_path)
    slmforge = str(installed / "bin" / "slmforge")
    done = subprocess.run([slmforge, "run", "demo", "--plain"], cwd=where, env=env, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    shipped = tmp_path / "home" / "shipped"
    record = json.loads((shipped / "out" / "demo" / "run.json").read_text())
    assert [s["status"] for s in record["steps"]] == ["ran"] * len(record["steps"]) and len(record["steps"]) >= 6
    assert (shipped / "out" / "demo" / "model" / "genai_config.json").is_file()
    assert str(shipped / "out" / "demo" / "model") in done.stdout  # the run says where its model is
    assert (tmp_path / "home" / "registry.db").is_file()  # registered in $SLMFORGE_HOME
    assert not list(where.iterdir())  # nothing written where it was run
    assert not [p for p in installed.rglob("*") if ".slmforge" in p.parts or "out" in p.parts]  # nor in the package

    valid = subprocess.run([slmforge, "validate", "demo"], cwd=where, env=env, capture_output=True, text=True,
                           timeout=300)
    assert valid.returncode == 0 and "valid; " in valid.stdout and "build_onnx" in valid.stdout, valid.stderr
    bad = subprocess.run([slmforge, "validate", "no-such-recipe.json"], cwd=where, env=env, capture_output=True,
                         text=True, timeout=300)
    assert bad.returncode == 2 and "no-such-recipe.json" in bad.stderr

    # Compiled for Azure ML from the installed package: the steps' code is a snapshot of the package
    # alone (not site-packages, and nothing from a checkout), so the job runs the slmforge that compiled it.
    compiled = tmp_path / "compiled"
    done = subprocess.run([slmforge, "compile", "demo-aml", "-o", str(compiled)], cwd=where, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    code = compiled / "code"
    assert (code / "slmforge" / "steps" / "finetune.py").is_file()
    assert sorted(p.name for p in code.iterdir()) == ["slmforge"]
    assert "code: code" in (compiled / "pipeline.yml").read_text()
