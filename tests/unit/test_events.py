"""Every sample event in events/ drives the real handler of the function template.yaml routes it to,
with the environment template.yaml gives that function, against moto resources built from the template.

A sample whose function has no handler yet is skipped with the issue that brings it; the test picks
it up by itself once functions/<name>/app.py exists.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from redis_scim.auth import TokenEntry
from redis_scim.local.lambda_runtime import FUNCTIONS_DIR, InvocationContext, load_function
from redis_scim.local.resources import LocalResources, create_resources, load_template

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")

EVENTS = Path(__file__).resolve().parents[2] / "events"
SAMPLE_TOKEN = "example-token-for-the-sample-events"
STACK = "redis-scim"

# Which function each kind of sample event is for (by file name prefix), and the issue that adds
# the function when its handler is not there yet.
ROUTES = {
    "scim_": ("ScimApiFunction", "issue 2"),
    "sqs_": ("AclApplierFunction", "issue 3"),
    "reconciler_": ("ReconcilerFunction", "issue 5"),
}
CODE_DIRS = {
    "ScimApiFunction": "scim_api",
    "AclApplierFunction": "acl_applier",
    "ReconcilerFunction": "reconciler",
}
# What each SCIM sample gets from an empty Directory (the PATCH adds a member nobody created: 400
# invalidValue; the DELETE names a user nobody created: 404); a new sample must not be a 5xx.
SCIM_STATUS = {
    "scim_get_users": 200,
    "scim_get_service_provider_config": 200,
    "scim_post_user": 201,
    "scim_patch_group": 400,
    "scim_delete_user": 404,
    "scim_unauthorized": 401,
}
POLICY = """\
version: 1
roles:
  cache-reader: "+@read ~cache:*"
groups:
  "Cache Readers": [cache-reader]
targets:
  local:
    kind: redis
    url: redis://127.0.0.1:1
"""


def sample_files() -> list[Path]:
    return sorted(EVENTS.glob("*.json"))


def route(sample: Path) -> tuple[str, str]:
    for prefix, target in ROUTES.items():
        if sample.name.startswith(prefix):
            return target
    raise AssertionError(f"{sample.name}: no function takes it; start its name with one of {sorted(ROUTES)}")


def test_every_sample_is_routed_to_a_function_of_the_template() -> None:
    template = load_template()
    for sample in sample_files():
        function, _ = route(sample)
        if function == "ReconcilerFunction" and function not in template["Resources"]:
            continue  # the schedule sample is ready before the reconciler lands
        assert template["Resources"][function]["Type"] == "AWS::Serverless::Function", sample.name
        code_uri = template["Resources"][function]["Properties"]["CodeUri"]
        assert code_uri == f"functions/{CODE_DIRS[function]}", function


def template_environment(function: str, resources: LocalResources) -> dict[str, str]:
    """The environment template.yaml gives `function` (Globals merged with its own), resolved
    against the local resources; pseudo parameters and parameters take the local stack's values."""
    template = load_template()
    parameters = {name: spec.get("Default") for name, spec in template["Parameters"].items()}
    physical = {**resources.tables, **resources.queues, **resources.secrets}
    pseudo = {"AWS::StackName": STACK, "AWS::Region": "us-east-1", "AWS::AccountId": "123456789012"}

    def resolve(value: Any) -> str:
        if isinstance(value, dict) and "Ref" in value:
            name = value["Ref"]
            for names in (pseudo, physical, parameters):
                if name in names:
                    return str(names[name])
            raise AssertionError(f"{function}: environment refers to {name}, which the local stack lacks")
        if isinstance(value, dict) and "Fn::Sub" in value:
            text = value["Fn::Sub"]
            for name, replacement in {**pseudo, **physical}.items():
                text = text.replace("${" + name + "}", str(replacement))
            return text
        if isinstance(value, dict) and "Fn::Join" in value:
            # A CommaDelimitedList parameter: its default is already the joined text.
            separator, items = value["Fn::Join"]
            return resolve(items) if isinstance(items, dict) else separator.join(map(resolve, items))
        assert not isinstance(value, dict | list), f"{function}: unexpected environment value {value}"
        return str(value)

    variables = {
        **template["Globals"]["Function"]["Environment"]["Variables"],
        **template["Resources"][function]["Properties"].get("Environment", {}).get("Variables", {}),
    }
    return {name: resolve(value) for name, value in variables.items()}


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, LocalResources]]:
    core_logger = logging.getLogger("redis_scim")
    saved = (core_logger.handlers[:], core_logger.propagate, core_logger.level)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with mock_aws():
        session = boto3.Session(region_name="us-east-1")
        entry = TokenEntry.for_token(SAMPLE_TOKEN, token_id="tok-sample")
        resources = create_resources(
            session, stack_name=STACK, secret_values={"ScimTokenSecret": json.dumps([entry.to_json()])}
        )
        for name in CODE_DIRS.values():  # a module loaded elsewhere holds another run's settings
            sys.modules.pop(f"functions.{name}.app", None)
        try:
            yield session, resources
        finally:
            for name in CODE_DIRS.values():
                sys.modules.pop(f"functions.{name}.app", None)
            core_logger.handlers[:], core_logger.propagate, core_logger.level = saved


@pytest.mark.parametrize("sample", sample_files(), ids=lambda path: path.stem)
def test_sample_event_drives_its_handler(
    sample: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    function, issue = route(sample)
    code_dir = CODE_DIRS[function]
    if not (FUNCTIONS_DIR / code_dir / "app.py").exists() or function not in load_template()["Resources"]:
        pytest.skip(f"{function} (functions/{code_dir}/app.py and template.yaml) lands with {issue}")
    _, resources = request.getfixturevalue("aws")
    for name, value in template_environment(function, resources).items():
        monkeypatch.setenv(name, value)
    if "POLICY" in template_environment(function, resources):
        # The deployed path (/opt/…) does not exist here: the same kind of file, locally.
        policy = tmp_path / "policy.yaml"
        policy.write_text(POLICY)
        monkeypatch.setenv("POLICY", str(policy))
    event = json.loads(sample.read_text())

    result = load_function(code_dir).lambda_handler(event, InvocationContext(function_name=function))

    if function == "ScimApiFunction":
        assert result["headers"]["Content-Type"] == "application/scim+json"
        assert result["statusCode"] == SCIM_STATUS.get(sample.stem, result["statusCode"]) < 500, result
    elif function == "AclApplierFunction":
        # The sample's users are unknown to this empty Directory: converging them is a no-op success.
        assert result == {"batchItemFailures": []}
    else:
        # The policy's only target (port 1) is down: reported, and the run itself still succeeds.
        assert set(result["unreachable"]) == {"local"}
        assert result["failed_repairs"] == 0
