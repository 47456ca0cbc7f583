"""The recipe: one strict pydantic model, in Olive's current (0.7–0.13, flat) shape.

Every model forbids unknown keys. The Cookbook's and Olive 0.6's spellings never reach these
models: `generations.py` rewrites them into this shape first and keeps where each key came from,
so errors name the path the user wrote. Only structure and single-field ranges live here;
checks across fields (references, paths, template columns) live in `checks.py`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BeforeValidator, Field, create_model, field_validator, model_validator

from slmforge.contract.params import pydantic_fields
from slmforge.recipe.azure import (  # noqa: F401 - re-exported
    AzureMLClient,
    AzureMLDatastoreFiles,
    AzureMLRegistryModel,
    DatastorePath,
    RegistryModelRef,
)
from slmforge.recipe.base import Strict
from slmforge.recipe.data_config import DataConfig, LoadDatasetConfig, PreProcessConfig  # noqa: F401
from slmforge.recipe.evaluators import Evaluator, EvaluatorRef
from slmforge.recipe.passes import (  # noqa: F401 - re-exported
    FINETUNE_PASSES,
    ExtractAdaptersPass,
    FinetunePass,
    MergePass,
    ModelBuilderPass,
    Pass,
    TrainingArgs,
)
from slmforge.registry.rules import ASSET_NAME_PATTERN, DEFAULT_TRACKING_URI_TEXT
from slmforge.steps.evaluate import Params as EvaluateParams

# --------------------------------------------------------------------------- input model


class HfModel(Strict):
    """A Hugging Face model: a local folder, a hub id or an Azure ML registry model (the Cookbook:
    `PyTorchModel` with `config.hf_config.model_name`)."""

    type: Literal["HfModel"] = Field(description="Olive's model type: a Hugging Face model")
    model_path: AzureMLRegistryModel | str = Field(
        description="the base model: a local folder (relative to the recipe file), a Hugging Face hub id, or an "
        "Azure ML registry model",
        examples=["../.slmforge/models/smollm2-135m-instruct", "microsoft/Phi-3-mini-4k-instruct"])
    task: str = Field("text-generation", description="text-generation (Olive: text-generation-with-past); "
                      "another task is refused beside a fine-tune pass (recipe/load_kwargs.py)")
    load_kwargs: dict[str, Any] | None = Field(
        None, description="Olive's from_pretrained arguments: torch_dtype (the fine-tune's load dtype when its pass "
        "names none), trust_remote_code; the rest are noted or refused by name (recipe/load_kwargs.py)")
    model_file_format: Literal["PyTorch.MLflow", "PyTorch.Folder"] | None = Field(
        None, description="how an Azure ML registry model is stored: PyTorch.MLflow (an MLflow model folder) or "
        "PyTorch.Folder (a plain Hugging Face folder)")


# --------------------------------------------------------------------------- systems


def _lower_device(value: Any) -> Any:
    """Olive lower-cases the device: "GPU" is "gpu"."""
    return value.lower() if isinstance(value, str) else value


class Accelerator(Strict):
    device: Literal["cpu", "gpu", "npu"] = Field("cpu", description="the device the system runs on (any case)")
    execution_providers: list[str] | None = Field(None, description="onnxruntime execution providers for this "
                                                  "device", examples=[["CPUExecutionProvider"]])

    _device = field_validator("device", mode="before")(_lower_device)


AcceleratorSpec = Union[Annotated[Literal["cpu", "gpu", "npu"], BeforeValidator(_lower_device)], Accelerator]


class LocalSystem(Strict):
    type: Literal["LocalSystem"] = Field(description="this machine")
    accelerators: list[AcceleratorSpec] | None = Field(None, description="devices: a name or {device, "
                                                       "execution_providers}", examples=[["cpu"]])


class DockerConfig(Strict):
    base_image: str | None = Field(None, description="docker image the environment builds on (with conda_file_path)")
    conda_file_path: str | None = Field(None, description="conda YAML installed on base_image (relative to the "
                                        "recipe file)")
    build_context_path: str | None = Field(None, description="folder holding a Dockerfile to build instead")
    dockerfile: str | None = Field(None, description="the Dockerfile's name inside build_context_path")

    @model_validator(mode="after")
    def _one_source(self) -> "DockerConfig":
        if self.build_context_path is None and self.base_image is None:
            raise ValueError("needs 'base_image' (with 'conda_file_path') or 'build_context_path'")
        if self.build_context_path is not None and self.base_image is not None:
            raise ValueError("use either 'base_image' or 'build_context_path', not both")
        return self


class EnvironmentRef(Strict):
    name: str = Field(description="a registered Azure ML environment's name")
    version: str | int | None = Field(None, description="its version (or give label)")
    label: str | None = Field(None, description="its label, e.g. latest (or give version)")

    @model_validator(mode="after")
    def _version_or_label(self) -> "EnvironmentRef":
        if (self.version is None) == (self.label is None):
            raise ValueError("give exactly one of 'version' or 'label'")
        return self


class Distribution(Strict):
    type: Literal["pytorch"] = Field("pytorch", description="torch.distributed, the one distribution slmforge runs")
    process_count_per_instance: int = Field(1, ge=1, description="processes per node (one per GPU)")


StepName = Literal["load_data", "finetune", "merge", "build_onnx", "evaluate", "register"]


class AzureMLSystem(Strict):
    type: Literal["AzureML"] = Field(description="an Azure ML compute cluster")
    accelerators: list[AcceleratorSpec] | None = Field(None, description="devices: a name or {device, "
                                                       "execution_providers}", examples=[["gpu"]])
    hf_token: bool = Field(False, description="read secret 'hf-token' from the workspace Key Vault")
    aml_compute: str = Field(description="compute cluster the pipeline runs on", examples=["gpu-cluster"])
    aml_docker_config: DockerConfig | None = Field(None, description="build the job's environment from a docker "
                                                   "image or context (default: slmforge's own environments)")
    aml_environment_config: EnvironmentRef | None = Field(None, description="run in a registered Azure ML "
                                                          "environment instead")
    instance_count: int = Field(1, ge=1, description="nodes for the finetune step")
    distribution: Distribution | None = Field(None, description="how the finetune step spreads over processes")
    step_compute: dict[StepName, str] | None = Field(None, description="per-step compute overrides")

    @model_validator(mode="after")
    def _one_environment(self) -> "AzureMLSystem":
        if self.aml_docker_config is not None and self.aml_environment_config is not None:
            raise ValueError("use either 'aml_docker_config' or 'aml_environment_config', not both")
        return self


System = Annotated[Union[LocalSystem, AzureMLSystem], Field(discriminator="type")]


# --------------------------------------------------------------------------- engine and our additions


class Engine(Strict):
    host: str | None = Field(None, description="the system (a name in 'systems') the passes run on")
    target: str | None = Field(None, description="the system (a name in 'systems') the model is evaluated on")
    search_strategy: Literal[False] | None = Field(None, description="false or left out: slmforge runs no search")
    execution_providers: list[str] | None = Field(
        None, description="onnxruntime execution providers of the built model; CUDAExecutionProvider builds for "
        "cuda", examples=[["CPUExecutionProvider"]])
    cache_dir: str = Field(".slmforge/cache", min_length=1, description="the content-addressed step cache (relative "
                           "to the recipe file); a rerun reuses every step whose inputs are unchanged")
    output_dir: str = Field("out", min_length=1, description="where the run leaves model/, run.json, report.md and "
                            "logs/ (relative to the recipe file)", examples=["../out/smollm2-tones"])
    evaluate_input_model: bool = Field(False, description="also evaluate the input model (the 'base' row)")
    clean_cache: bool = Field(False, description="empty cache_dir before the run")
    evaluator: EvaluatorRef | None = Field(None, description="the evaluator (a name in 'evaluators', or inline) "
                                              "whose metrics every evaluate step computes")





class EvaluateConfig(create_model("EvaluateFields", __base__=Strict,
                                  **pydantic_fields(EvaluateParams, only=("max_samples", "max_new_tokens")))):
    """slmforge's own block: how the evaluate steps run (the evaluate step's parameters, steps/evaluate.py)."""

    data_config: str | None = Field(
        None, description="the data config whose rows are scored: a separate one is scored whole; left out (or "
        "the training one), the rows held out of training are scored (the fine-tune's eval_data_config, else "
        "eval_dataset_size of the training rows), never rows trained on", examples=["heldout"])
    enabled: bool = Field(True, description="false: no evaluate steps and no answer gates on eval rows (the merge "
                          "and ONNX logit checks stay), as Olive runs a recipe without an evaluator; the registered "
                          "model then carries no evaluation")


class RegisterConfig(Strict):
    """slmforge's own block: where the final model is registered."""

    name: str | None = Field(None, pattern=ASSET_NAME_PATTERN, description="model name (default: the recipe file's name)",
                             examples=["smollm2-tones"])
    registry: str | None = Field(None, description="Azure ML registry instead of the workspace")
    format: Literal["custom_model", "mlflow_model"] = Field("custom_model", description="the registered model's "
                                                           "format: the folder as it is, or an MLflow model")
    tracking_uri: str | None = Field(None, description=f"local MLflow registry (default: {DEFAULT_TRACKING_URI_TEXT})")
    local_registry: Literal["user", "project"] = Field(
        "user", description="without tracking_uri: 'user' registers in the one registry of this user "
        f"({DEFAULT_TRACKING_URI_TEXT}); 'project' in .slmforge/registry/ beside the recipe, which `slmforge "
        "models` and models:/ URIs read when run from the recipe's folder")
    enabled: bool = Field(True, description="false: no register step")


class Recipe(Strict):
    schema_: str | None = Field(None, alias="$schema", description="the JSON Schema editors check the recipe "
                                "with", examples=["./recipe.schema.json"])
    description: str | None = Field(None, description="free text about the recipe")
    azureml_client: AzureMLClient | None = Field(None, description="the Azure ML workspace `submit` uses")
    input_model: HfModel = Field(description="the model fine-tuned (or built, or evaluated)")
    data_configs: list[DataConfig] = Field(default_factory=list, description="the data, each with a name the "
                                           "passes and evaluate refer to")
    systems: dict[str, System] = Field(default_factory=dict, description="where passes run, by name (the "
                                       "engine's host and target)")
    passes: dict[str, Pass] = Field(default_factory=dict, description="the passes by name, run in order: a "
                                    "LoRA-family fine-tune, MergeAdapterWeights, ModelBuilder, ExtractAdapters")
    engine: Engine = Field(default_factory=Engine, description="where the run's cache and outputs go, and which "
                           "evaluator runs (Olive 0.7+ also takes these keys at the top level)")
    evaluators: dict[str, Evaluator] = Field(default_factory=dict, description="Olive's evaluators by name")
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig, description="slmforge: how the base, merged "
                                     "and ONNX models are evaluated")
    register_: RegisterConfig = Field(default_factory=RegisterConfig, alias="register",
                                      description="slmforge: where the final model is registered")
