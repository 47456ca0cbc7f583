"""Which workspace, with which credential: the one line a user without a workspace or a sign-in sees."""

from __future__ import annotations

from slmforge.cli import main as cli


def test_no_workspace_is_one_line_naming_the_ways_to_give_one(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # no config.json here
    monkeypatch.delenv("SLMFORGE_WORKSPACE", raising=False)
    assert cli(["status", "some-job"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    for way in ("--workspace", "azureml_client", "SLMFORGE_WORKSPACE", "az login", "slmforge emulator start"):
        assert way in err[0], (way, err[0])


def test_a_failed_sign_in_is_one_line_naming_az_login_not_the_credential_chain():
    """What DefaultAzureCredential raises without `az login` (azure-identity's own error type)."""
    from azure.identity import CredentialUnavailableError

    from slmforge.backends.aml.workspace import as_step_failed

    raw = CredentialUnavailableError("DefaultAzureCredential failed to retrieve a token from the included "
                                     "credentials.\nAttempted credentials:\n\tEnvironmentCredential: ...")
    try:
        raise RuntimeError("submitting") from raw  # the SDK wraps it
    except RuntimeError as e:
        message = str(as_step_failed(e, "submitting the pipeline failed"))
    assert "\n" not in message and "DefaultAzureCredential" not in message
    for way in ("az login", "--workspace", "azureml_client", "SLMFORGE_WORKSPACE"):
        assert way in message, (way, message)



def test_a_jobs_azureml_tracking_uri_becomes_plain_mlflow_rest():
    """What azureml-mlflow (not installable beside our pins) does with a job's MLFLOW_TRACKING_URI."""
    from slmforge.contract.aml_tracking import rest_tracking_uri, use_job_tracking

    scope = "/subscriptions/s/resourceGroups/g/providers/Microsoft.MachineLearningServices/workspaces/w"
    env = {"MLFLOW_TRACKING_URI": f"azureml://eastus.api.azureml.ms/mlflow/v1.0{scope}"}
    assert use_job_tracking(env) is True
    assert env["MLFLOW_TRACKING_URI"] == f"https://eastus.api.azureml.ms/mlflow/v2.0{scope}"
    local = {"MLFLOW_TRACKING_URI": "sqlite:///mlflow.db"}
    assert use_job_tracking(local) is False and local["MLFLOW_TRACKING_URI"] == "sqlite:///mlflow.db"
    assert rest_tracking_uri("https://host/x") == "https://host/x"
