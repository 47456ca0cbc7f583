"""Would a node's environment run a slmforge step? The emulator runs every node in its own venv, so
it checks what a workspace's image build would decide: the environment's conda file must declare
slmforge's runtime requirements (slmforge.contract.runtime_env). An environment without a conda file (an
image or a Docker build context only) cannot be inspected here and is not judged.
"""

from __future__ import annotations

import re

from slmforge.emulator.context import Emulator

_ARM_ENV = re.compile(r"/environments/([^/]+)/versions/([^/]+)$")
_SHORT_ENV = re.compile(r"^azureml:([^/:@]+):([^/:@]+)$")


def environment_problem(emu: Emulator, environment: str | None) -> str | None:
    """Why this environment (a component's `environment` id) cannot run a slmforge step, or None."""
    import yaml

    from slmforge.contract.runtime_env import missing_requirements

    match = _ARM_ENV.search(environment or "") or _SHORT_ENV.match(environment or "")
    if match is None:
        return f"environment '{environment}' is not an environment id the emulator can look up"
    name, version = match.groups()
    doc = emu.store.get("environments", f"{name}/{version}")
    if doc is None:
        return f"environment {name}:{version} is not in the workspace"
    conda_text = doc["properties"].get("condaFile")
    if not conda_text:
        return None
    missing = missing_requirements(yaml.safe_load(conda_text) or {})
    if not missing:
        return None
    label = "an anonymous environment" if name == "CliV2AnonymousEnvironment" else f"environment {name}:{version}"
    return (f"{label} lacks slmforge's runtime requirements: its conda file's pip section does not declare "
            f"{', '.join(missing)} (see environments/conda-cpu.yml)")
