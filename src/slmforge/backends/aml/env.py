"""Which Azure ML environment each pipeline node runs in.

Order of precedence: the recipe's `aml_environment_config` (a registered environment, by version
or label), else its `aml_docker_config` (a base image with a conda file, or a Docker build
context; paths relative to the recipe; a conda file gets slmforge's requirements merged in, see
slmforge.contract.runtime_env), else the project's own `environments/` definitions (the
GPU one for fine-tuning when the host system's accelerators say gpu). Project environments are
used anonymously (content-hashed), so nothing has to be registered first and a rerun with the
same definition reuses the environment the service already built.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Union

from slmforge.contract.runtime_env import environments_dir, merge_requirements, read_conda_file
from slmforge.errors import InvalidInput
from slmforge.recipe.checks import resolve_path
from slmforge.recipe.schema import Accelerator, AzureMLSystem
from slmforge.steps import catalog

if TYPE_CHECKING:
    from azure.ai.ml.entities import Environment

    from slmforge.recipe.loaded import LoadedRecipe

EnvironmentChoice = Union[str, "Environment"]  # "azureml:name:version" / "azureml:name@label" or an object


def wants_gpu(system: AzureMLSystem) -> bool:
    for acc in system.accelerators or []:
        device = acc.device if isinstance(acc, Accelerator) else acc
        if device == "gpu":
            return True
    return False


def registered_environment(system: AzureMLSystem) -> str | None:
    ref = system.aml_environment_config
    if ref is None:
        return None
    if ref.label is not None:
        return f"azureml:{ref.name}@{ref.label}"
    return f"azureml:{ref.name}:{ref.version}"


def docker_environment(loaded: "LoadedRecipe", system: AzureMLSystem) -> "Environment | None":
    from azure.ai.ml.entities import BuildContext, Environment

    cfg = system.aml_docker_config
    if cfg is None:
        return None
    where = f"{loaded.path}: {loaded.where('systems', loaded.recipe.engine.host, 'aml_docker_config')}"
    if cfg.build_context_path is not None:
        context = resolve_path(loaded, cfg.build_context_path)
        dockerfile = cfg.dockerfile or "Dockerfile"
        if not (context / dockerfile).is_file():
            raise InvalidInput(f"{where}.build_context_path: no {dockerfile} in {context}")
        return Environment(build=BuildContext(path=str(context), dockerfile_path=dockerfile))
    if cfg.conda_file_path is None:
        return Environment(image=cfg.base_image)
    conda_file = resolve_path(loaded, cfg.conda_file_path)
    if not conda_file.is_file():
        raise InvalidInput(f"{where}.conda_file_path: conda file '{cfg.conda_file_path}' not found "
                           f"(looked at {conda_file})")
    # The steps import slmforge's requirements: add them to the user's own packages.
    conda = merge_requirements(read_conda_file(conda_file, f"{where}.conda_file_path"),
                               "gpu" if wants_gpu(system) else "cpu", f"{where}.conda_file_path: {conda_file.name}")
    return Environment(image=cfg.base_image, conda_file=conda)


def project_environment(kind: str) -> "Environment":
    """environments/<kind>.yml as an anonymous environment (same image and conda file)."""
    import yaml
    from azure.ai.ml.entities import Environment

    path = environments_dir() / f"{kind}.yml"
    spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    return Environment(image=spec["image"], conda_file=str(path.parent / spec["conda_file"]))


def node_environments(loaded: "LoadedRecipe", system: AzureMLSystem, components: set[str]) -> dict[str, EnvironmentChoice]:
    """component name -> the environment its nodes run in."""
    chosen: EnvironmentChoice | None = registered_environment(system) or docker_environment(loaded, system)
    if chosen is not None:
        return {c: chosen for c in components}
    gpu = wants_gpu(system)  # without a GPU every step runs in the CPU environment
    wanted = {c: catalog.spec(c).environment if gpu else "cpu" for c in components}
    made = {kind: project_environment(kind) for kind in sorted(set(wanted.values()))}
    return {c: made[kind] for c, kind in wanted.items()}
