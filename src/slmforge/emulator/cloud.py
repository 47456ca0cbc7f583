"""The emulator's cloud name, and the one thing about it a process must fix before it imports the SDK."""

from __future__ import annotations

import os
import sys

CLOUD_PREFIX = "SlmforgeEmulator-"

AZUREML_CLOUD_ENV = "AZUREML_CURRENT_CLOUD"  # azure.ai.ml._azure_environments.AZUREML_CLOUD_ENV_NAME


def forget_inherited_emulator_cloud() -> None:
    """The SDK records its last client's cloud in AZUREML_CURRENT_CLOUD, and a child process inherits
    it: there `import azure.ai.ml` itself fails ("Unknown cloud environment") on an emulator's cloud,
    which only a client registers. Every client of ours names its cloud, so that value is dropped —
    unless this process has the SDK loaded already: then it set the value itself, for its own client."""
    if "azure.ai.ml._azure_environments" in sys.modules:
        return
    if os.environ.get(AZUREML_CLOUD_ENV, "").startswith(CLOUD_PREFIX):
        del os.environ[AZUREML_CLOUD_ENV]
