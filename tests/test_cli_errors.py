"""Bad input and a hostile environment give ONE error line naming the cause, never a traceback.

Each case runs the real CLI as a subprocess (issue 11 #15): an output folder that is a file, a
read-only cache, a full disk, text in the wrong encoding, a broken registry database, a broken
workspace file, out-of-range numbers, and so on.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest

REPO = Path(__file__).resolve().parents[1]
SLMFORGE = [sys.executable, "-m", "slmforge"]

# The shortest recipe that trains and registers something: LoRA for 2 steps, no merge/build/evaluate.
RECIPE = {
    "input_model": {"type": "PyTorchModel", "config": {"hf_config": {"model_name": "MODEL"}}},
    "data_configs": [{
        "name": "tones",
        "load_dataset_config": {"data_name": "json", "data_files": "tones.jsonl"},
        "pre_process_data_config": {"text_cols": ["phrase", "tone"],
                                    "text_template": "### Text: {phrase}\n### The tone is:\n{tone}",
                                    "source_max_len": 32, "loss_on": "completion"},
    }],
    "passes": {"lora": {"type": "LoRA", "config": {
        "r": 4, "alpha": 8, "train_data_config": "tones",
        "training_args": {"seed": 0, "per_device_train_batch_size": 4, "max_steps": 2}}}},
    "engine": {"cache_dir": "cache", "output_dir": "out"},
    "register": {"name": "cli-errors"},
}
ROWS = [{"phrase": f"phrase number {i} é", "tone": "joy" if i % 2 else "fear"} for i in range(12)]


@dataclass
class Env:
    tmp: Path
    model: Path
    home: Path
    cleanups: list[Callable[[], None]] = field(default_factory=list)

    def recipe(self, edit=None, *, name: str = "recipe.json", data: bytes | None = None) -> Path:
        recipe = copy.deepcopy(RECIPE)
        recipe["input_model"]["config"]["hf_config"]["model_name"] = str(self.model)
        if edit is not None:
            edit(recipe)
        (self.tmp / "tones.jsonl").write_bytes(data if data is not None else jsonl(ROWS).encode())
        path = self.tmp / name
        path.write_text(json.dumps(recipe, indent=2), encoding="utf-8")
        return path


@dataclass
class Case:
    argv: list[str]
    names: str  # the error line must contain this (the path or the service)
    exit_code: int | None = None  # None: any non-zero code
    prefix: list[str] = field(default_factory=list)  # e.g. a wrapper that drops privileges
    env: dict[str, str] = field(default_factory=dict)
    python: bool = False  # argv is for `python` itself (e.g. `-m slmforge.steps.X`), not for the CLI


def jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def ws_file(env: Env, **changes) -> Path:
    data = {"kind": "slmforge-emulator", "subscription_id": "sub", "resource_group": "rg", "workspace_name": "ws",
            "tenant_id": "t", "ca_bundle": str(env.tmp / "ca.pem"), "endpoint": "https://127.0.0.1:9",
            "cloud": {"name": "x", "metadata": {}}}
    data.update(changes)
    data = {k: v for k, v in data.items() if v is not None}
    path = env.tmp / "workspace.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def without_dac() -> list[str]:
    """Root ignores file modes: run the CLI without the capabilities that let it (or as we are)."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: a read-only folder cannot be made read-only")
    return ["setpriv", "--inh-caps=-all", "--bounding-set=-dac_override,-dac_read_search,-fowner", "--"]


def read_only(path: Path, env: Env) -> None:
    path.chmod(0o555)
    env.cleanups.append(lambda: path.chmod(0o755))


def file_at(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("not a folder\n")
    return path


def warm_cache(env: Env) -> tuple[Path, int]:
    """A recipe whose every step is cached (a rerun only copies the model and writes run.json),
    and the size in bytes of its final model."""
    recipe = env.recipe()
    done = subprocess.run([*SLMFORGE, "run", str(recipe), "--plain"], capture_output=True, text=True,
                          env=cli_env(env))
    assert done.returncode == 0, done.stdout + done.stderr
    size = sum(f.stat().st_size for f in (env.tmp / "out" / "model").iterdir())
    shutil.rmtree(env.tmp / "out")
    return recipe, size


def small_disk(folder: Path, size: int) -> list[str]:
    """Mount a tmpfs of `size` bytes on `folder` in a private user+mount namespace: a real full
    disk, without root and without touching anyone else's mounts. The cache lives on another
    file system, so the final model is copied, not hard-linked."""
    folder.mkdir(parents=True, exist_ok=True)
    if shutil.which("unshare") is None or subprocess.run(["unshare", "-rm", "true"], capture_output=True).returncode:
        pytest.skip("no user namespaces here: cannot mount a small tmpfs")
    script = f'mount -t tmpfs -o size={size} tmpfs "{folder}" && exec "$@"'
    return ["unshare", "-rm", "sh", "-c", script, "sh"]


def locked_db(env: Env) -> Path:
    from slmforge.registry.mlflow_store import client_for

    db = env.home / "registry.db"
    client_for(f"sqlite:///{db}").search_registered_models()  # an empty but initialised registry
    con = sqlite3.connect(db, isolation_level=None)
    con.execute("BEGIN EXCLUSIVE")
    env.cleanups.append(con.close)
    return db


def half_initialised_db(env: Env) -> Path:
    env.home.mkdir(parents=True, exist_ok=True)
    db = env.home / "registry.db"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL)")
    con.execute("INSERT INTO alembic_version VALUES ('0584bdc529eb')")
    con.execute("CREATE TABLE experiments (experiment_id INTEGER PRIMARY KEY)")
    con.commit()
    con.close()
    return db


def corrupt_parquet(env: Env) -> Path:
    path = env.recipe(lambda r: r["data_configs"][0]["load_dataset_config"].update(
        data_name="parquet", data_files="tones.parquet"))
    (env.tmp / "tones.parquet").write_bytes(b"PAR1" + os.urandom(200) + b"PAR1")
    return path


def yaml_bomb(env: Env) -> Path:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, 12):
        prev, cur = chr(ord("a") + i - 1), chr(ord("a") + i)
        lines.append(f"{cur}: &{cur} [{', '.join(['*' + prev] * 9)}]")
    path = env.tmp / "bomb.yaml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _cases() -> dict[str, Callable[[Env], Case]]:
    def run(recipe: Path, **kw) -> Case:
        return Case(["run", str(recipe), "--plain"], **kw)

    def out_ro(env):
        recipe = env.recipe()
        (env.tmp / "out").mkdir()
        read_only(env.tmp / "out", env)
        return run(recipe, names=str(env.tmp / "out"), prefix=without_dac())

    def cache_ro(env):
        recipe = env.recipe()
        (env.tmp / "cache").mkdir()
        read_only(env.tmp / "cache", env)
        return run(recipe, names=str(env.tmp / "cache"), prefix=without_dac())

    def disk_full(env):
        recipe, model_size = warm_cache(env)
        return run(recipe, names=str(env.tmp / "out"), exit_code=1,
                   prefix=small_disk(env.tmp / "out", model_size // 2))

    def data_as(encoding):
        def case(env):
            return run(env.recipe(data=jsonl(ROWS).encode(encoding)), names=str(env.tmp / "tones.jsonl"), exit_code=2)
        return case

    def recipe_as(encoding):
        def case(env):
            path = env.recipe()
            path.write_bytes(path.read_text(encoding="utf-8").replace("Text", "Tèxt").encode(encoding))
            return Case(["validate", str(path)], names=str(path), exit_code=2)
        return case

    def models(env, *extra):
        return Case(["models", *extra], names=str(env.home / "registry.db"))

    def garbage_db(env):
        env.home.mkdir(parents=True, exist_ok=True)
        (env.home / "registry.db").write_bytes(b"this is not a database" * 100)
        return models(env)

    def status_with(**changes):
        def case(env):
            path = ws_file(env, **changes)
            return Case(["status", "job-1", "--workspace", str(path)], names=str(path), exit_code=2)
        return case

    def predict_template(env):
        return Case(["predict", "--model", str(env.model), "--template", "{phrase} {", "hello"],
                    names="{phrase} {", exit_code=2)

    def evaluate_template(env):
        env.recipe()
        return Case(["evaluate", "--model", str(env.model), "--data", str(env.tmp / "tones.jsonl"),
                     "--template", "{phrase} {"], names="{phrase} {", exit_code=2)

    return {
        "output_dir is a file": lambda env: run(
            env.recipe(), names=f"engine.output_dir {file_at(env.tmp / 'out')} is a file", exit_code=2),
        "output_dir read-only": out_ro,
        "cache read-only": cache_ro,
        "disk full during the final copy": disk_full,
        "NUL byte in a path": lambda env: run(env.recipe(lambda r: r["data_configs"][0]["load_dataset_config"].update(
            data_files="ton\u0000es.jsonl")), names="data_files", exit_code=2),
        "UTF-16 data": data_as("utf-16"),
        "latin-1 data": data_as("latin-1"),
        "UTF-16 recipe": recipe_as("utf-16"),
        "latin-1 recipe": recipe_as("latin-1"),
        "corrupt parquet": lambda env: run(corrupt_parquet(env), names=str(env.tmp / "tones.parquet"), exit_code=2),
        "YAML alias bomb": lambda env: Case(["validate", str(yaml_bomb(env))], names=str(env.tmp / "bomb.yaml"),
                                            exit_code=2),
        "models on a locked registry.db": lambda env: (locked_db(env), models(env))[1],
        "models on a garbage registry.db": garbage_db,
        "models on a half-initialised registry.db": lambda env: (half_initialised_db(env), models(env))[1],
        "models --tracking-uri bogus://x": lambda env: Case(["models", "--tracking-uri", "bogus://x"],
                                                            names="bogus://x", exit_code=2),
        "workspace.json without ca_bundle": status_with(ca_bundle=None),
        "workspace.json with a non-string endpoint": status_with(endpoint=1234),
        "emulator start --port 99999": lambda env: Case(
            ["emulator", "start", "--dir", str(env.tmp / "emu"), "--port", "99999"], names="99999", exit_code=2),
        "emulator --dir is a file": lambda env: Case(
            ["emulator", "start", "--dir", str(file_at(env.tmp / "emu"))], names=str(env.tmp / "emu"), exit_code=2),
        "tiny-model onto a file": lambda env: Case(["tiny-model", str(file_at(env.tmp / "m"))],
                                                   names=str(env.tmp / "m"), exit_code=2),
        "compile -o onto a file": lambda env: Case(
            ["compile", str(REPO / "pipelines" / "demo-aml.json"), "-o", str(file_at(env.tmp / "c"))],
            names=str(env.tmp / "c"), exit_code=2),
        "download -o onto a file": lambda env: Case(
            ["download", "job-1", "--workspace", str(ws_file(env)), "-o", str(file_at(env.tmp / "d"))],
            names=str(env.tmp / "d"), exit_code=2),
        "schema -o a folder": lambda env: Case(["schema", "-o", str(env.tmp)], names=str(env.tmp), exit_code=2),
        "schema -o under a missing folder": lambda env: Case(
            ["schema", "-o", str(env.tmp / "nope" / "s.json")], names=str(env.tmp / "nope"), exit_code=2),
        "predict --template with a lone brace": predict_template,
        "evaluate --template with a lone brace": evaluate_template,
        "tiny-model --seed 99999999999999999999": lambda env: Case(
            ["tiny-model", str(env.tmp / "m"), "--seed", "99999999999999999999"], names="--seed", exit_code=2),
        # issue 11 #19: names and versions follow Azure ML's asset rules, before any service call
        "register --name 'bad name!'": lambda env: Case(
            ["register", "job-1", "--workspace", str(ws_file(env)), "--name", "bad name!"], names="--name 'bad name!'",
            exit_code=2),
        "register --version ../x": lambda env: Case(
            ["register", "job-1", "--workspace", str(ws_file(env)), "--version", "../x"], names="--version '../x'",
            exit_code=2),
        "compile --version ../x": lambda env: Case(
            ["compile", str(REPO / "pipelines" / "demo-aml.json"), "-o", str(env.tmp / "c"), "--version", "../x"],
            names="--version '../x'", exit_code=2),
        "the register step with a bad name": lambda env: Case(
            ["-m", "slmforge.steps.register", "--model", str(env.model), "--name", "bad name!", "--registration",
             str(env.tmp / "reg")], names="'bad name!'", exit_code=2, python=True),
        "a step run with a missing option": lambda env: Case(
            ["-m", "slmforge.steps.register", "--name", "m"], names="required: --model", exit_code=2, python=True),
        "a recipe whose register.name is 256 characters": lambda env: Case(
            ["validate", str(env.recipe(lambda r: r["register"].update(name="m" * 256)))], names="register.name",
            exit_code=2),
        # issue 11 #22
        "a folder given as the recipe": lambda env: Case(["validate", str(env.tmp)],
                                                         names=f"{env.tmp}: is a folder; expected a recipe file",
                                                         exit_code=2),
        "emulator start --port -1": lambda env: Case(
            ["emulator", "start", "--dir", str(env.tmp / "emu"), "--port", "-1"], names="port -1 is out of range",
            exit_code=2),
        "engine.output_dir is empty": lambda env: Case(
            ["validate", str(env.recipe(lambda r: r["engine"].update(output_dir="")))], names="engine.output_dir",
            exit_code=2),
    }


CASES = _cases()


def cli_env(env: Env, extra: dict[str, str] | None = None) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO / "src"), "SLMFORGE_HOME": str(env.home),
            "SLMFORGE_RETRY_SECONDS": "2", "HF_HUB_OFFLINE": "1", **(extra or {})}


@pytest.mark.parametrize("name", list(CASES))
def test_one_error_line_naming_the_cause(name, tmp_path, tiny_model_dir):
    env = Env(tmp=tmp_path, model=tiny_model_dir, home=tmp_path / "home")
    try:
        case = CASES[name](env)
        command = [sys.executable, *case.argv] if case.python else [*SLMFORGE, *case.argv]
        done = subprocess.run([*case.prefix, *command], capture_output=True, text=True, cwd=tmp_path,
                              env=cli_env(env, case.env), timeout=300, stdin=subprocess.DEVNULL)
    finally:
        for cleanup in reversed(env.cleanups):
            cleanup()
    lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
    shown = f"rc={done.returncode}\nstderr:\n{done.stderr[-3000:]}"
    assert done.returncode != 0, shown
    assert done.returncode != -signal.SIGXFSZ, shown
    if case.exit_code is not None:
        assert done.returncode == case.exit_code, shown
    assert "Traceback" not in done.stderr, shown
    assert len(lines) == 1, shown
    assert lines[0].startswith("slmforge"), shown
    assert case.names in lines[0], shown


@pytest.fixture(scope="module")
def finished_job(emulator) -> str:
    """A job of the emulated workspace (the Cookbook recipe fails fast offline: fine for `status`)."""
    import re

    done = subprocess.run([*SLMFORGE, "submit", str(REPO / "tests" / "recipes" / "cookbook-aml.json"),
                           "--workspace", str(emulator[1]), "--detach"], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO / "src")}, timeout=300)
    assert done.returncode == 0, done.stderr
    return re.search(r"^submitted (\S+)$", done.stdout, re.M).group(1)


@pytest.mark.parametrize("unbuffered", ["", "1"], ids=["buffered", "unbuffered"])
def test_a_closed_stdout_pipe_exits_quietly_and_is_not_an_unreachable_workspace(emulator, finished_job,
                                                                               unbuffered):
    """`slmforge status JOB | true` (issue 11 #20): the reader is gone before we print."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        done = subprocess.run([*SLMFORGE, "status", finished_job, "--workspace", str(emulator[1])],
                              stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=120,
                              env={**os.environ, "PYTHONPATH": str(REPO / "src"), "PYTHONUNBUFFERED": unbuffered})
    finally:
        os.close(write_end)
    # Either the print met the closed pipe (exit 141, nothing said) or the output was still buffered
    # and the job's own failure is the one line (the Cookbook job fails offline at load_data).
    lines = done.stderr.splitlines()
    assert (done.returncode, lines) == (141, []) or (
        done.returncode == 1 and len(lines) == 1 and f"job {finished_job} failed at step" in lines[0]), done.stderr


def test_a_run_names_the_first_bad_row_of_its_data(tmp_path, tiny_model_dir):
    """Issue 11 #17: rows 3 and 7 are broken; the run's one line names row 3, the one to fix first.
    Issue 20 #5: found before any step runs (exit 2), no longer by load_data (exit 1, "in the log")."""
    env = Env(tmp=tmp_path, model=tiny_model_dir, home=tmp_path / "home")
    rows = [dict(r) for r in ROWS]
    rows[2]["tone"], rows[6]["tone"] = 3, 7
    recipe = env.recipe(data=jsonl(rows).encode())
    done = subprocess.run([*SLMFORGE, "run", str(recipe), "--plain"], capture_output=True, text=True,
                          env=cli_env(env), timeout=300)
    lines = done.stderr.splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert "row 3 (line 3): column 'tone' is a number (3)" in lines[0], lines[0]
    assert "row 7" not in lines[0] and "(and 1 more bad row)" in lines[0], lines[0]


def test_sharing_into_a_registry_that_does_not_exist_is_one_line(emulator, finished_job):
    """Issue 11 #19: `register --registry nonexistent` used to succeed; nothing is registered now."""
    done = subprocess.run([*SLMFORGE, "register", finished_job, "--workspace", str(emulator[1]),
                           "--registry", "nonexistent"], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    lines = done.stderr.splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert "--registry nonexistent: no such Azure ML registry" in lines[0], lines[0]


def test_emulator_faults_changes_only_what_it_is_given(emulator):
    """Issue 11 #22: `faults --retry-after 7` alone used to reset the fault rate to 0."""
    from slmforge.cli import main as cli
    from slmforge.emulator import control

    folder = str(emulator[0])
    try:
        assert cli(["emulator", "faults", "--dir", folder, "--faults", "0.25:503"]) == 0
        assert cli(["emulator", "faults", "--dir", folder, "--retry-after", "7"]) == 0
        settings = control.admin(Path(folder), "GET", "faults")
        assert (settings["rate"], settings["kinds"], settings["retry_after"]) == (0.25, ["503"], 7)
        assert cli(["emulator", "faults", "--dir", folder, "--faults", "0.5"]) == 0
        assert control.admin(Path(folder), "GET", "faults")["retry_after"] == 7
    finally:
        control.admin(Path(folder), "PUT", "faults", {"rate": 0.0})


def test_a_recipe_with_a_utf8_bom_is_read(tmp_path, tiny_model_dir):
    """Issue 11 #22: editors on Windows write a BOM; the recipe is still UTF-8."""
    env = Env(tmp=tmp_path, model=tiny_model_dir, home=tmp_path / "home")
    for name in ("recipe.json", "recipe.yaml"):
        path = env.recipe(name=name)
        path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
        done = subprocess.run([*SLMFORGE, "validate", str(path)], capture_output=True, text=True,
                              env=cli_env(env), timeout=120)
        assert done.returncode == 0 and ": valid;" in done.stdout, done.stderr


def test_the_schema_states_the_tracking_uri_default_the_code_uses(tmp_path, monkeypatch):
    """Issue 11 #22: the schema said 'sqlite beside output_dir'; the registry is under SLMFORGE_HOME."""
    from slmforge.commands.schema import recipe_schema_text
    from slmforge.registry.rules import default_tracking_uri

    monkeypatch.setenv("SLMFORGE_HOME", str(tmp_path))
    text = json.loads(recipe_schema_text())["$defs"]["RegisterConfig"]["properties"]["tracking_uri"]["description"]
    stated = text.split("default: ", 1)[1].split(",")[0]
    assert stated.replace("$SLMFORGE_HOME", str(tmp_path)) == default_tracking_uri()


def test_a_child_process_that_inherits_an_emulator_cloud_still_reaches_the_emulator(emulator):
    """The SDK records its last client's cloud in AZUREML_CURRENT_CLOUD; a child process inherited it and
    failed at `import azure.ai.ml` ("Unknown cloud environment") before its own client registered it."""
    cloud = json.loads(Path(emulator[1]).read_text())["cloud"]["name"]
    done = subprocess.run([*SLMFORGE, "submit", str(REPO / "tests" / "recipes" / "cookbook-aml.json"),
                           "--workspace", str(emulator[1]), "--detach"], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO / "src"), "AZUREML_CURRENT_CLOUD": cloud},
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert "submitted " in done.stdout
