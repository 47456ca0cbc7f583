"""Azure ML references a recipe names: the workspace, datastore files, registry models.

These keep Olive's `{type, config}` resource shape in every generation.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from slmforge.recipe.base import Strict


class AzureMLClient(Strict):
    """Which Azure ML workspace to use (Olive's `azureml_client`)."""

    subscription_id: str = Field(description="Azure subscription id")
    resource_group: str = Field(description="resource group of the workspace")
    workspace_name: str = Field(description="Azure ML workspace name")
    keyvault_name: str | None = Field(None, description="Key Vault holding the secret `hf-token`")
    read_timeout: int | None = Field(None, gt=0, description="seconds an Azure ML request may take")
    max_operation_retries: int | None = Field(None, ge=0, description="retries of a failed Azure ML operation")
    operation_retry_interval: int | None = Field(None, ge=0, description="seconds between those retries")


class DatastorePath(Strict):
    azureml_client: AzureMLClient | None = Field(None, description="the workspace of the datastore (default: the "
                                                 "recipe's azureml_client)")
    datastore_name: str = Field(description="e.g. workspaceblobstore")
    relative_path: str = Field(description="path of the file or folder inside the datastore")


class AzureMLDatastoreFiles(Strict):
    """`data_files` that live in an Azure ML datastore."""

    type: Literal["azureml_datastore"] = Field(description="a file in an Azure ML datastore")
    config: DatastorePath = Field(description="the datastore and the file's path in it")

    @property
    def uri(self) -> str:
        path = self.config.relative_path.lstrip("/")
        return f"azureml://datastores/{self.config.datastore_name}/paths/{path}"


class RegistryModelRef(Strict):
    name: str = Field(description="the model's name in the registry", examples=["Phi-3-mini-4k-instruct"])
    registry_name: str = Field(description="the Azure ML registry", examples=["azureml-msr"])
    version: str | int = Field(description="the model's version")

    @field_validator("version", mode="after")
    @classmethod
    def _as_text(cls, value: str | int) -> str:
        return str(value)


class AzureMLRegistryModel(Strict):
    """A model from an Azure ML registry (the Cookbook's `azureml-msr` Phi-3)."""

    type: Literal["azureml_registry_model"] = Field(description="a model in an Azure ML registry")
    config: RegistryModelRef = Field(description="which registry, model and version")

    @property
    def uri(self) -> str:
        c = self.config
        return f"azureml://registries/{c.registry_name}/models/{c.name}/versions/{c.version}"
