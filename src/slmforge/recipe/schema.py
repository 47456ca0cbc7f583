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

    type: Literal["HfModel"]
    model_path: AzureMLRegistryModel | str
    task: str = Field("text-generation", description="text-generation (Olive: text-generation-with-past); "
                      "another task is refused beside a fine-tune pass (recipe/load_kwargs.py)")
    load_kwargs: dict[str, Any] | None = Field(
        None, description="Olive's from_pretrained arguments: torch_dtype (the fine-tune's load dtype when its pass "
        "names none), trust_remote_code; the rest are noted or refused by name (recipe/load_kwargs.py)")
    model_file_format: Literal["PyTorch.MLflow", "PyTorch.Folder"] | None = None


# --------------------------------------------------------------------------- systems


def _lower_device(value: Any) -> Any:
    """Olive lower-cases the device: "GPU" is "gpu"."""
    return value.lower() if isinstance(value, str) else value


class Accelerator(Strict):
    device: Literal["cpu", "gpu", "npu"] = "cpu"
    execution_providers: list[str] | None = None

    _device = field_validator("device", mode="before")(_lower_device)


AcceleratorSpec = Union[Annotated[Literal["cpu", "gpu", "npu"], BeforeValidator(_lower_device)], Accelerator]


class LocalSystem(Strict):
    type: Literal["LocalSystem"]
    accelerators: list[AcceleratorSpec] | None = None


class DockerConfig(Strict):
    base_image: str | None = None
    conda_file_path: str | None = None
    build_context_path: str | None = None
    dockerfile: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> "DockerConfig":
        if self.build_context_path is None and self.base_image is None:
            raise ValueError("needs 'base_image' (with 'conda_file_path') or 'build_context_path'")
        if self.build_context_path is not None and self.base_image is not None:
            raise ValueError("use either 'base_image' or 'build_context_path', not both")
        return self


class EnvironmentRef(Strict):
    name: str
    version: str | int | None = None
    label: str | None = None

    @model_validator(mode="after")
    def _version_or_label(self) -> "EnvironmentRef":
        if (self.version is None) == (self.label is None):
            raise ValueError("give exactly one of 'version' or 'label'")
        return self


class Distribution(Strict):
    type: Literal["pytorch"] = "pytorch"
    process_count_per_instance: int = Field(1, ge=1)


StepName = Literal["load_data", "finetune", "merge", "build_onnx", "evaluate", "register"]


class AzureMLSystem(Strict):
    type: Literal["AzureML"]
    accelerators: list[AcceleratorSpec] | None = None
    hf_token: bool = Field(False, description="read secret 'hf-token' from the workspace Key Vault")
    aml_compute: str = Field(description="compute cluster the pipeline runs on")
    aml_docker_config: DockerConfig | None = None
    aml_environment_config: EnvironmentRef | None = None
    instance_count: int = Field(1, ge=1, description="nodes for the finetune step")
    distribution: Distribution | None = None
    step_compute: dict[StepName, str] | None = Field(None, description="per-step compute overrides")

    @model_validator(mode="after")
    def _one_environment(self) -> "AzureMLSystem":
        if self.aml_docker_config is not None and self.aml_environment_config is not None:
            raise ValueError("use either 'aml_docker_config' or 'aml_environment_config', not both")
        return self


System = Annotated[Union[LocalSystem, AzureMLSystem], Field(discriminator="type")]


# --------------------------------------------------------------------------- engine and our additions


class Engine(Strict):
    host: str | None = None
    target: str | None = None
    search_strategy: Literal[False] | None = None
    execution_providers: list[str] | None = None
    cache_dir: str = Field(".slmforge/cache", min_length=1)
    output_dir: str = Field("out", min_length=1)
    evaluate_input_model: bool = False
    clean_cache: bool = False
    evaluator: EvaluatorRef | None = Field(None, description="the evaluator (a name in 'evaluators', or inline) "
                                              "whose metrics every evaluate step computes")





class EvaluateConfig(create_model("EvaluateFields", __base__=Strict,
                                  **pydantic_fields(EvaluateParams, only=("max_samples", "max_new_tokens")))):
    """slmforge's own block: how the evaluate steps run (the evaluate step's parameters, steps/evaluate.py)."""

    data_config: str | None = Field(None, description="default: the fine-tune's data config")


class RegisterConfig(Strict):
    """slmforge's own block: where the final model is registered."""

    name: str | None = Field(None, pattern=ASSET_NAME_PATTERN, description="model name (default: the recipe file's name)")
    registry: str | None = Field(None, description="Azure ML registry instead of the workspace")
    format: Literal["custom_model", "mlflow_model"] = "custom_model"
    tracking_uri: str | None = Field(None, description=f"local MLflow registry (default: {DEFAULT_TRACKING_URI_TEXT})")
    local_registry: Literal["user", "project"] = Field(
        "user", description="without tracking_uri: 'user' registers in the one registry of this user "
        f"({DEFAULT_TRACKING_URI_TEXT}); 'project' in .slmforge/registry/ beside the recipe, which `slmforge "
        "models` and models:/ URIs read when run from the recipe's folder")
    enabled: bool = True


class Recipe(Strict):
    schema_: str | None = Field(None, alias="$schema")
    description: str | None = None
    azureml_client: AzureMLClient | None = None
    input_model: HfModel
    data_configs: list[DataConfig] = Field(default_factory=list)
    systems: dict[str, System] = Field(default_factory=dict)
    passes: dict[str, Pass] = Field(default_factory=dict)
    engine: Engine = Field(default_factory=Engine)
    evaluators: dict[str, Evaluator] = Field(default_factory=dict, description="Olive's evaluators by name")
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    register_: RegisterConfig = Field(default_factory=RegisterConfig, alias="register")
