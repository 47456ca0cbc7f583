"""The recipe: the Olive workflow JSON of the Phi-3 Cookbook, as strict pydantic models.

Every model forbids unknown keys. Olive writes some blocks with or without a wrapping level
(`config` on systems and passes, `params` on data loading): `_unwrap` accepts both and the
error formatter in `loader.py` puts the level back into the reported JSON path.
Only structure and single-field ranges live here; checks across fields (references, paths,
template columns) live in `checks.py`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from slmforge.onnx_builder import DEFAULT_INT4_ALGO, INT4_ALGOS
from slmforge.registry_rules import ASSET_NAME_PATTERN, DEFAULT_TRACKING_URI_TEXT


class Strict(BaseModel):
    # strict: "16" is not 16 and "false" is not False (issue 11 #22); a JSON int still passes for a float.
    model_config = ConfigDict(extra="forbid", populate_by_name=True, strict=True)


def _unwrap(data: Any, level: str) -> Any:
    """Merge `{level: {...}}` into its parent so both Olive spellings validate the same way."""
    if isinstance(data, dict) and isinstance(data.get(level), dict):
        inner = data[level]
        merged = {k: v for k, v in data.items() if k != level}
        clash = set(merged) & set(inner) - {"type"}
        if clash:
            raise ValueError(f"'{sorted(clash)[0]}' is given both inside and outside '{level}'")
        merged.update(inner)
        return merged
    return data


# --------------------------------------------------------------------------- azure


class AzureMLClient(Strict):
    """Which Azure ML workspace to use (Olive's `azureml_client`)."""

    subscription_id: str = Field(description="Azure subscription id")
    resource_group: str = Field(description="resource group of the workspace")
    workspace_name: str = Field(description="Azure ML workspace name")
    keyvault_name: str | None = Field(None, description="Key Vault holding the secret `hf-token`")
    read_timeout: int | None = Field(None, gt=0)
    max_operation_retries: int | None = Field(None, ge=0)
    operation_retry_interval: int | None = Field(None, ge=0)


class DatastorePath(Strict):
    azureml_client: AzureMLClient | None = None
    datastore_name: str = Field(description="e.g. workspaceblobstore")
    relative_path: str = Field(description="path of the file or folder inside the datastore")


class AzureMLDatastoreFiles(Strict):
    """`data_files` that live in an Azure ML datastore."""

    type: Literal["azureml_datastore"]
    config: DatastorePath

    @property
    def uri(self) -> str:
        path = self.config.relative_path.lstrip("/")
        return f"azureml://datastores/{self.config.datastore_name}/paths/{path}"


class RegistryModelRef(Strict):
    name: str
    registry_name: str
    version: str | int

    @field_validator("version", mode="after")
    @classmethod
    def _as_text(cls, value: str | int) -> str:
        return str(value)


class AzureMLRegistryModel(Strict):
    """A model from an Azure ML registry (the Cookbook's `azureml-msr` Phi-3)."""

    type: Literal["azureml_registry_model"]
    config: RegistryModelRef

    @property
    def uri(self) -> str:
        c = self.config
        return f"azureml://registries/{c.registry_name}/models/{c.name}/versions/{c.version}"


# --------------------------------------------------------------------------- input model


class HfConfig(Strict):
    model_name: str = Field(description="a local folder (relative to the recipe) or a hub id")
    task: str = "text-generation"
    model_loading_args: dict[str, Any] | None = None
    from_pretrained_args: dict[str, Any] | None = None


class PyTorchModelConfig(Strict):
    hf_config: HfConfig
    model_path: AzureMLRegistryModel | str | None = None
    model_file_format: Literal["PyTorch.MLflow", "PyTorch.Folder"] | None = None


class PyTorchModel(Strict):
    type: Literal["PyTorchModel"]
    config: PyTorchModelConfig


class HfModel(Strict):
    """Olive's newer spelling: the model path and task at the top level."""

    type: Literal["HfModel"]
    model_path: AzureMLRegistryModel | str
    task: str = "text-generation"
    load_kwargs: dict[str, Any] | None = None
    model_file_format: Literal["PyTorch.MLflow", "PyTorch.Folder"] | None = None

    @model_validator(mode="before")
    @classmethod
    def _flatten(cls, data: Any) -> Any:
        return _unwrap(data, "config")


InputModel = Annotated[Union[PyTorchModel, HfModel], Field(discriminator="type")]


# --------------------------------------------------------------------------- data


class LoadDatasetParams(Strict):
    data_name: Literal["json", "csv", "parquet"] = Field("json", description="file format")
    data_files: str | AzureMLDatastoreFiles = Field(description="local path or datastore file")
    split: str = "train"

    @model_validator(mode="before")
    @classmethod
    def _flatten(cls, data: Any) -> Any:
        return _unwrap(data, "params")


class PreProcessParams(Strict):
    dataset_type: Literal["corpus"] = "corpus"
    text_cols: list[str] = Field(min_length=1, description="columns the template reads")
    text_template: str | None = Field(None, description="e.g. '### Text: {phrase}\\n### The tone is:\\n{tone}'")
    corpus_strategy: Literal["join", "line-by-line"] = "join"
    source_max_len: int = Field(1024, gt=0, description="tokens per training example")
    pad_to_max_len: bool = False
    use_attention_mask: bool = True
    loss_on: Literal["all", "completion"] = Field(
        "all", description="'completion': loss only on the text after the template's last placeholder"
    )
    max_samples: int | None = Field(None, gt=0, description="use only the first N rows")

    @model_validator(mode="before")
    @classmethod
    def _flatten(cls, data: Any) -> Any:
        return _unwrap(data, "params")


class ComponentKwargs(Strict):
    pre_process_data: PreProcessParams


class ParamsConfig(LoadDatasetParams):
    """The older single-block spelling: load parameters plus `component_kwargs`."""

    component_kwargs: ComponentKwargs | None = None


class DataConfig(Strict):
    name: str = Field(min_length=1)
    type: Literal["HuggingfaceContainer"] = "HuggingfaceContainer"
    load_dataset_config: LoadDatasetParams | None = None
    pre_process_data_config: PreProcessParams | None = None
    params_config: ParamsConfig | None = None
    component_kwargs: ComponentKwargs | None = None

    @model_validator(mode="after")
    def _one_shape(self) -> "DataConfig":
        if self.params_config is not None and self.load_dataset_config is not None:
            raise ValueError("use either 'load_dataset_config' or 'params_config', not both")
        if self.params_config is None and self.load_dataset_config is None:
            raise ValueError("needs 'load_dataset_config' (or 'params_config') naming the data files")
        if self.preprocess is None:
            raise ValueError("needs 'pre_process_data_config' with 'text_cols'")
        return self

    @property
    def load(self) -> LoadDatasetParams:
        return self.load_dataset_config or self.params_config  # type: ignore[return-value]

    @property
    def preprocess(self) -> PreProcessParams | None:
        if self.pre_process_data_config is not None:
            return self.pre_process_data_config
        for kwargs in (self.component_kwargs, self.params_config and self.params_config.component_kwargs):
            if kwargs is not None:
                return kwargs.pre_process_data
        return None


# --------------------------------------------------------------------------- systems


class Accelerator(Strict):
    device: Literal["cpu", "gpu", "npu"] = "cpu"
    execution_providers: list[str] | None = None


AcceleratorSpec = Union[Literal["cpu", "gpu", "npu"], Accelerator]


class LocalSystem(Strict):
    type: Literal["LocalSystem"]
    accelerators: list[AcceleratorSpec] | None = None

    @model_validator(mode="before")
    @classmethod
    def _flatten(cls, data: Any) -> Any:
        return _unwrap(data, "config")


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
    is_dev: bool | None = None

    @model_validator(mode="before")
    @classmethod
    def _flatten(cls, data: Any) -> Any:
        return _unwrap(data, "config")

    @model_validator(mode="after")
    def _one_environment(self) -> "AzureMLSystem":
        if self.aml_docker_config is not None and self.aml_environment_config is not None:
            raise ValueError("use either 'aml_docker_config' or 'aml_environment_config', not both")
        return self


System = Annotated[Union[LocalSystem, AzureMLSystem], Field(discriminator="type")]


# --------------------------------------------------------------------------- passes


class TrainingArgs(Strict):
    """The Hugging Face TrainingArguments names the fine-tune step honours; anything else is an error."""

    seed: int = 42
    data_seed: int | None = None
    per_device_train_batch_size: int = Field(8, ge=1)
    per_device_eval_batch_size: int = Field(8, ge=1)
    gradient_accumulation_steps: int = Field(1, ge=1)
    gradient_checkpointing: bool = False
    learning_rate: float = Field(2e-4, gt=0, lt=1)
    lr_scheduler_type: Literal[
        "linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup"
    ] = "linear"
    warmup_steps: int = Field(0, ge=0)
    warmup_ratio: float = Field(0.0, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    num_train_epochs: float = Field(1.0, gt=0)
    max_steps: int = Field(-1, ge=-1, description="-1: train num_train_epochs; else this many optimizer steps")
    logging_steps: int = Field(10, ge=1)
    save_steps: int = Field(500, ge=1)
    evaluation_strategy: Literal["no", "steps", "epoch"] | None = None
    eval_strategy: Literal["no", "steps", "epoch"] | None = None
    eval_steps: int | None = Field(None, ge=1)
    group_by_length: bool = False
    adam_beta1: float = Field(0.9, ge=0, lt=1)
    adam_beta2: float = Field(0.999, ge=0, lt=1)
    adam_epsilon: float = Field(1e-8, gt=0)
    max_grad_norm: float = Field(1.0, ge=0)
    optim: Literal[
        "adamw_torch", "adamw_hf", "adamw_torch_fused", "paged_adamw_32bit", "paged_adamw_8bit", "adamw_8bit", "sgd"
    ] = "adamw_torch"

    @model_validator(mode="after")
    def _one_eval_strategy(self) -> "TrainingArgs":
        a, b = self.evaluation_strategy, self.eval_strategy
        if a is not None and b is not None and a != b:
            raise ValueError("'evaluation_strategy' and 'eval_strategy' disagree; give one")
        return self

    @property
    def effective_eval_strategy(self) -> str:
        return self.eval_strategy or self.evaluation_strategy or "no"


class LoRAConfig(Strict):
    target_modules: list[str] | None = Field(None, description="default: every attention and MLP projection")
    r: int | None = Field(None, ge=1, description="LoRA rank (Olive: r; the Cookbook: lora_r)")
    lora_r: int | None = Field(None, ge=1)
    alpha: float | None = Field(None, gt=0, description="LoRA alpha (the Cookbook: lora_alpha)")
    lora_alpha: float | None = Field(None, gt=0)
    lora_dropout: float = Field(0.05, ge=0, lt=1)
    double_quant: bool = Field(True, description="QLoRA: quantize the quantization constants")
    quant_type: Literal["nf4", "fp4"] = "nf4"
    compute_dtype: Literal["bfloat16", "float16", "float32", "bf16", "fp16", "fp32"] = "float32"
    train_data_config: str = Field(description="name of a data config")
    eval_data_config: str | None = None
    eval_dataset_size: float | None = Field(None, gt=0, description="fraction (<1) or row count held out")
    training_args: TrainingArgs = Field(default_factory=TrainingArgs)

    @model_validator(mode="after")
    def _aliases_agree(self) -> "LoRAConfig":
        for short, long in (("r", "lora_r"), ("alpha", "lora_alpha")):
            a, b = getattr(self, short), getattr(self, long)
            if a is not None and b is not None and a != b:
                raise ValueError(f"'{short}' and '{long}' disagree ({a} vs {b}); give one")
        return self

    @property
    def rank(self) -> int:
        return self.r or self.lora_r or 64

    @property
    def scaling_alpha(self) -> float:
        return self.alpha or self.lora_alpha or 16.0


class LoRAPass(Strict):
    type: Literal["LoRA", "QLoRA"]
    config: LoRAConfig


class MergeConfig(Strict):
    torch_dtype: Literal["float32", "float16", "fp32", "fp16"] = "float32"


class MergePass(Strict):
    type: Literal["MergeAdapterWeights"]
    config: MergeConfig = Field(default_factory=MergeConfig)


class BuilderConfig(Strict):
    precision: Literal["int4", "int8", "fp16", "fp32"] = "int4"
    execution_provider: Literal["cpu", "cuda"] | None = None
    int4_block_size: Literal[16, 32, 64, 128, 256] = 32
    int4_accuracy_level: int = Field(4, ge=0, le=4)
    int4_algo_config: Literal[INT4_ALGOS] = Field(  # type: ignore[valid-type]
        DEFAULT_INT4_ALGO, description="int4 quantization method (builder algo_config); slmforge's default keeps the "
        "accuracy best on the measured real model (bench/results/int4_options.json)")
    int4_is_symmetric: bool = True
    int4_op_types_to_quantize: list[Literal["MatMul", "Gather"]] | None = None
    int4_nodes_to_exclude: list[str] | None = None
    exclude_embeds: bool = False
    exclude_lm_head: bool = False
    extra_options: dict[str, str | int | float | bool] | None = None
    max_accuracy_drop: float | None = Field(
        None, ge=0, le=1, description="slmforge: the largest accuracy loss on the eval rows, against the model "
        "the build came from, that the build may show (default per precision: int4 0.05, int8 0.02)")


class ModelBuilderPass(Strict):
    type: Literal["ModelBuilder"]
    config: BuilderConfig = Field(default_factory=BuilderConfig)


Pass = Annotated[Union[LoRAPass, MergePass, ModelBuilderPass], Field(discriminator="type")]


# --------------------------------------------------------------------------- engine and our additions


class Engine(Strict):
    log_severity_level: int = Field(1, ge=0, le=4)
    host: str | None = None
    target: str | None = None
    search_strategy: Literal[False] | None = None
    execution_providers: list[str] | None = None
    cache_dir: str = Field(".slmforge/cache", min_length=1)
    output_dir: str = Field("out", min_length=1)
    evaluate_input_model: bool = False
    clean_cache: bool = False


ENGINE_KEYS = tuple(Engine.model_fields)


class EvaluateConfig(Strict):
    """slmforge's own block: how the evaluate steps run."""

    data_config: str | None = Field(None, description="default: the fine-tune's data config")
    max_samples: int = Field(200, ge=1, description="eval rows scored by generation")
    max_new_tokens: int = Field(8, ge=1)


class RegisterConfig(Strict):
    """slmforge's own block: where the final model is registered."""

    name: str | None = Field(None, pattern=ASSET_NAME_PATTERN, description="model name")
    registry: str | None = Field(None, description="Azure ML registry instead of the workspace")
    format: Literal["custom_model", "mlflow_model"] = "custom_model"
    tracking_uri: str | None = Field(None, description=f"local MLflow registry (default: {DEFAULT_TRACKING_URI_TEXT})")
    enabled: bool = True


class Recipe(Strict):
    schema_: str | None = Field(None, alias="$schema")
    description: str | None = None
    azureml_client: AzureMLClient | None = None
    input_model: InputModel
    data_configs: list[DataConfig] = Field(default_factory=list)
    systems: dict[str, System] = Field(default_factory=dict)
    passes: dict[str, Pass] = Field(default_factory=dict)
    engine: Engine = Field(default_factory=Engine)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    register_: RegisterConfig = Field(default_factory=RegisterConfig, alias="register")

    @model_validator(mode="before")
    @classmethod
    def _engine_keys_at_top(cls, data: Any) -> Any:
        """Olive allows engine keys at the top level; fold them into `engine`."""
        if not isinstance(data, dict):
            return data
        top = {k: data[k] for k in ENGINE_KEYS if k in data}
        if not top:
            return data
        engine = dict(data.get("engine") or {})
        for key in top:
            if key in engine:
                raise ValueError(f"'{key}' is given both at the top level and in 'engine'")
        engine.update(top)
        rest = {k: v for k, v in data.items() if k not in top}
        rest["engine"] = engine
        return rest
