"""Compile a recipe's step graph into an Azure ML pipeline job (azure-ai-ml), and write it as YAML.

Each step becomes a node of the command component `components/<component>.yml` (loaded with
`azure.ai.ml.load_component`, the same file the local backend renders). Inputs map as follows:
  step -> the upstream node's output;   uri  -> Input(path=azureml://...) (registry models as
  mlflow_model/custom_model);   path -> a local file/folder the SDK uploads at submission;
  text -> a small file written into `files_dir`, uploaded as uri_file.
Hub ids stay string parameters. A local-only step (StepSpec.local_only: registration) does not
compile: on Azure ML the final model is a named, versioned pipeline output and the evaluation of
that model (the graph's `final_metrics`) another, registered through the SDK after the job (models.py).
Nothing secret is compiled in: with `hf_token`, nodes only get the Key Vault *name*
(SLMFORGE_KEYVAULT); the steps fetch the secret at run time (slmforge.secrets).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from slmforge.errors import InvalidInput
from slmforge.recipe.graph import base_registered_name, build_graph, model_source
from slmforge.recipe.naming import host_system, registered_name
from slmforge.recipe.schema import AzureMLSystem
from slmforge.recipe.step_graph import Ref, Step, StepGraph
from slmforge.steps import catalog
from slmforge.secrets import KEYVAULT_ENV

if TYPE_CHECKING:
    from azure.ai.ml.entities import PipelineJob

    from slmforge.recipe.loaded import LoadedRecipe

DEFAULT_DATASTORE = "workspaceblobstore"
FINAL_OUTPUT = "model"  # the pipeline output holding the final model
METRICS_OUTPUT = "metrics"  # the final model's evaluation (StepGraph.final_metrics), read when registering
# With a separate adapter (StepGraph.adapter) the final model is its shared base: the adapter and the
# evaluation of base + adapter are two more outputs, and the job's tags name the base apart.
ADAPTER_OUTPUT, ADAPTER_METRICS_OUTPUT = "adapter", "adapter_metrics"
BASE_NAME_JOB_TAG = "slmforge.base_name"
# The recipe file submitted, by its name: run.json's `recipe` after download (a local path would tie the
# compiled folder to this machine).
RECIPE_JOB_TAG = "slmforge.recipe"
PIPELINE_FILE = "pipeline.yml"
CODE_DIR, BUILD_DIR = "code", "docker"  # snapshots beside pipeline.yml (compile -o)


@dataclass
class CompiledPipeline:
    job: "PipelineJob"
    graph: StepGraph
    model_name: str
    model_version: str
    system: AzureMLSystem

    @property
    def final_step(self) -> str:
        return self.graph.final[0]


def quiet_sdk() -> None:
    """azure-ai-ml logs a warning per experimental schema class it loads: noise for our users."""
    import logging

    logging.getLogger("azure.ai.ml._utils._experimental").setLevel(logging.ERROR)
    # "Downloading artifact <uri> to <tmp dir>" on every download: our commands say what they fetched
    logging.getLogger("azure.ai.ml.operations._job_operations").setLevel(logging.WARNING)


def aml_system(loaded: "LoadedRecipe", compute: str | None = None) -> AzureMLSystem:
    """The recipe's AzureML host system; for a local recipe given `compute`, one on that compute
    with the host's accelerators and no environment of its own (slmforge's environments/ apply)."""
    system = host_system(loaded)
    if system is not None:
        return system
    host = loaded.recipe.engine.host
    if compute:
        local = loaded.recipe.systems.get(host) if host else None
        return AzureMLSystem(type="AzureML", aml_compute=compute, accelerators=getattr(local, "accelerators", None))
    raise InvalidInput(f"{loaded.path}: engine.host: "
                       + (f"system '{host}' is not an AzureML system" if host else "not set")
                       + "; give --compute to run it on Azure ML, or make the host an AzureML system")


def model_version(graph: StepGraph, version: str | None = None) -> str:
    """The final model's version: given, else the first 12 hex digits of the recipe digest."""
    return version or graph.recipe_digest[:12]


def compile_pipeline(loaded: "LoadedRecipe", files_dir: Path, *, compute: str | None = None,
                     version: str | None = None, experiment: str | None = None) -> CompiledPipeline:
    """Build the PipelineJob; `text` inputs are written into `files_dir` (it must outlive submission)."""
    quiet_sdk()
    from azure.ai.ml import dsl

    from slmforge.backends.aml.env import node_environments

    system = aml_system(loaded, compute)
    graph = build_graph(loaded)
    steps = [s for s in graph.steps if not catalog.spec(s.component).local_only]
    components = _load_components({s.component for s in steps},
                                  node_environments(loaded, system, {s.component for s in steps}))
    mlflow_model = model_source(loaded).mlflow
    files_dir.mkdir(parents=True, exist_ok=True)
    name, ver = registered_name(loaded), model_version(graph, version)

    @dsl.pipeline(name=_node_safe(name), display_name=name, description=loaded.recipe.description,
                  default_compute=compute or system.aml_compute, default_datastore=DEFAULT_DATASTORE)
    def slmforge_pipeline():
        nodes: dict[str, Any] = {}
        for step in steps:
            component = components[step.component]
            kwargs: dict[str, Any] = dict(step.params)
            for key, ref in step.inputs.items():
                kwargs[key] = _bind(ref, component.inputs[key].type, nodes, files_dir, mlflow_model)
            node = component(**kwargs)
            node.name = step.name
            _configure_node(node, step, system, loaded)
            nodes[step.name] = node
        final_step, final_output = graph.final
        outputs = {FINAL_OUTPUT: getattr(nodes[final_step].outputs, final_output)}
        for key, where in ((METRICS_OUTPUT, graph.final_metrics), (ADAPTER_OUTPUT, graph.adapter),
                           (ADAPTER_METRICS_OUTPUT, graph.adapter_metrics)):
            if where is not None:  # metrics: only an evaluation of the final model itself
                outputs[key] = getattr(nodes[where[0]].outputs, where[1])
        return outputs

    job = slmforge_pipeline()
    # The name:version the recipe's model is registered as: the adapter's when there is one (the base's
    # version is its digest, known once built: models.py).
    out = job.outputs[ADAPTER_OUTPUT if graph.adapter else FINAL_OUTPUT]
    out.name, out.version = name, ver
    job.experiment_name = experiment or _node_safe(name)
    job.tags = {"slmforge.recipe_digest": graph.recipe_digest, RECIPE_JOB_TAG: loaded.path.name,
                "slmforge.model": f"{name}:{ver}",
                "slmforge.final_step": graph.final[0], "slmforge.register_format": loaded.recipe.register_.format}
    if graph.adapter:
        job.tags[BASE_NAME_JOB_TAG] = _base_name(loaded, graph)
    return CompiledPipeline(job=job, graph=graph, model_name=name, model_version=ver, system=system)


def _base_name(loaded: "LoadedRecipe", graph: StepGraph) -> str:
    """The shared base's registered name: the register step's, as the local run registers it."""
    register = next((s for s in graph.steps if catalog.spec(s.component).record == "registration"), None)
    given = register.params.get("base_name") if register is not None else None
    return str(given) if given else base_registered_name(loaded)


def validate_pipeline(job: "PipelineJob") -> None:
    """The SDK's local validation (inputs, computes, bindings); raise InvalidInput on the first problem."""
    result = job._validate()
    if not result.passed:
        raise InvalidInput(f"the compiled pipeline does not validate: {result.error_messages}")


_HEADER = "# Compiled by slmforge from its recipe"


def compiled_here(folder: Path) -> bool:
    """True when `folder` holds a pipeline.yml an earlier `slmforge compile` wrote (before the marker existed)."""
    try:
        with open(folder / PIPELINE_FILE, encoding="utf-8") as f:
            return f.readline().startswith(_HEADER)
    except (OSError, UnicodeError):
        return False


def write_pipeline(compiled: CompiledPipeline, out_dir: Path) -> Path:
    """Write `out_dir/pipeline.yml`, loadable with azure.ai.ml.load_job and `az ml job create -f`."""
    import yaml

    out_dir = out_dir.resolve()
    data = compiled.job._to_dict()
    _snapshot_folders(data, out_dir)
    _fix_local_paths(data, out_dir)
    path = out_dir / PIPELINE_FILE
    header = (f"{_HEADER}; submit with `slmforge submit` or `az ml job create -f`.\n"
              f"# recipe digest {compiled.graph.recipe_digest}\n")
    body = yaml.safe_dump({"$schema": "https://azuremlschemas.azureedge.net/latest/pipelineJob.schema.json", **data},
                          sort_keys=False, allow_unicode=True)
    path.write_text(header + body, encoding="utf-8")
    return path


# --------------------------------------------------------------------------- internals


def _load_components(names: set[str], environments: dict[str, Any]) -> dict[str, Any]:
    from azure.ai.ml import load_component

    from slmforge.resources import code_dir, components_dir

    code = str(code_dir())  # `code: ../src` holds in a checkout only; an installed slmforge snapshots itself
    loaded = {}
    for name in sorted(names):
        # before validation: load_component checks that the code folder exists
        component = load_component(source=components_dir() / f"{name}.yml", params_override=[{"code": code}])
        component.environment = environments[name]
        loaded[name] = component
    return loaded


def _bind(ref: Ref, input_type: str, nodes: dict[str, Any], files_dir: Path, mlflow_model: bool) -> Any:
    from azure.ai.ml import Input

    if ref.kind == "step":
        if ref.value not in nodes:
            raise InvalidInput(f"step input from '{ref.value}', which does not run on Azure ML")
        return getattr(nodes[ref.value].outputs, ref.output)
    if ref.kind == "uri":
        if "/models/" in ref.value:  # a registered model (registry or workspace)
            return Input(type="mlflow_model" if mlflow_model else "custom_model", path=ref.value)
        return Input(type=input_type, path=ref.value)
    if ref.kind == "path":
        local = Path(ref.value)
        return Input(type="uri_folder" if local.is_dir() else "uri_file", path=str(local))
    if ref.kind == "text":
        target = files_dir / ref.output
        target.write_text(ref.value, encoding="utf-8")
        return Input(type="uri_file", path=str(target))
    raise AssertionError(ref.kind)


def _configure_node(node: Any, step: Step, system: AzureMLSystem, loaded: "LoadedRecipe") -> None:
    from azure.ai.ml import PyTorchDistribution
    from azure.ai.ml.entities import JobResourceConfiguration

    if system.step_compute and step.component in system.step_compute:
        node.compute = system.step_compute[step.component]
    if system.hf_token:
        node.environment_variables = {KEYVAULT_ENV: loaded.recipe.azureml_client.keyvault_name}  # type: ignore[union-attr]
    distributed = system.distribution is not None or system.instance_count > 1
    if distributed and catalog.spec(step.component).distributable:
        per_instance = system.distribution.process_count_per_instance if system.distribution else 1
        node.distribution = PyTorchDistribution(process_count_per_instance=per_instance)
        node.resources = JobResourceConfiguration(instance_count=system.instance_count)


def _node_safe(name: str) -> str:
    """Azure ML job/experiment names: letters, digits, '_' and '-'."""
    return "".join(c if c.isalnum() or c in "_-" else "_" for c in name)


def _snapshot_folders(data: dict[str, Any], out_dir: Path) -> None:
    """Copy each component's code folder (and Docker build context) into out_dir and point the YAML
    at the copy, relative to pipeline.yml: the compiled folder is self-contained and can be moved."""
    refs: list[tuple[dict[str, Any], str, str]] = []  # (dict, key, snapshot folder name prefix)
    for node in data.get("jobs", {}).values():
        component = node.get("component")
        if not isinstance(component, dict):
            continue
        if isinstance(component.get("code"), str):
            refs.append((component, "code", CODE_DIR))
        environment = component.get("environment")
        build = environment.get("build") if isinstance(environment, dict) else None
        if isinstance(build, dict) and isinstance(build.get("path"), str):
            refs.append((build, "path", BUILD_DIR))
    copies: dict[str, str] = {}
    for holder, key, prefix in refs:
        source = holder[key]
        if source not in copies and Path(source).is_dir():
            copies[source] = prefix if prefix not in copies.values() else f"{prefix}-{len(copies) + 1}"
            _copy_uploaded_files(Path(source), out_dir / copies[source])
        if source in copies:
            holder[key] = copies[source]


def _copy_uploaded_files(source: Path, target: Path) -> None:
    """Copy what the SDK would upload from `source` (its own .amlignore/.gitignore rules) to `target`."""
    import shutil

    from azure.ai.ml._utils._asset_utils import get_ignore_file, get_upload_files_from_folder

    tmp = target.with_name(f".{target.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for absolute, relative in get_upload_files_from_folder(source, ignore_file=get_ignore_file(source)):
        (tmp / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(absolute, tmp / relative)
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)


def _fix_local_paths(node: Any, out_dir: Path) -> None:
    """The SDK dumps local input paths as 'azureml:/abs/path' (its union field tries ARM ids first):
    write them back as plain paths, relative when they lie inside `out_dir`."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "path" and isinstance(value, str) and value.startswith("azureml:") \
                    and not value.startswith("azureml://") and Path(value[len("azureml:"):]).is_absolute():
                local = Path(value[len("azureml:"):])
                node[key] = str(local.relative_to(out_dir)) if local.is_relative_to(out_dir) else str(local)
            else:
                _fix_local_paths(value, out_dir)
    elif isinstance(node, list):
        for item in node:
            _fix_local_paths(item, out_dir)


def summary(compiled: CompiledPipeline) -> dict[str, Any]:
    """What `slmforge compile` prints: nodes, computes, the final model."""
    job = compiled.job
    return {
        "name": job.display_name,
        "experiment": job.experiment_name,
        "default_compute": job.settings.default_compute,
        "nodes": {n: (node.compute or job.settings.default_compute) for n, node in job.jobs.items()},
        "final_model": {"name": compiled.model_name, "version": compiled.model_version,
                        "from": ".".join(compiled.graph.adapter or compiled.graph.final)},
        **({"base_model": {"name": job.tags[BASE_NAME_JOB_TAG], "from": ".".join(compiled.graph.final)}}
           if compiled.graph.adapter else {}),
        "recipe_digest": compiled.graph.recipe_digest,
    }
