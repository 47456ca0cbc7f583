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
