"""What cfn-lint and `sam validate --lint` do not check in template.yaml: Lambda runtime names,
batch sizes a FIFO event source accepts, the queue's visibility against the applier's timeout, the
append-only Audit table, least privilege, the layers, the names the code logs and counts, and the
local stack's tables and queues against the template's."""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import tomllib
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from redis_scim.auth import RejectionReason
from redis_scim.directory.rules import PUBLISH_FAILURE_METRIC
from redis_scim.local.resources import TEMPLATE, create_resources, load_template
from redis_scim.observability import MetricName
from redis_scim.sync.engine import REJECTED_USERNAMES, USERNAME_COLLISIONS

ROOT = TEMPLATE.parent
CORE = ROOT / "layers" / "core" / "redis_scim"
LAMBDA_PYTHON_RUNTIMES = {"python3.12", "python3.13"}
AUDIT_ACTIONS = {"dynamodb:PutItem", "dynamodb:Query"}
# Actions IAM cannot scope to a resource: the only ones allowed on "*".
UNSCOPABLE_ACTIONS = {
    "xray:PutTraceSegments",
    "xray:PutTelemetryRecords",
    "ec2:CreateNetworkInterface",
    "ec2:DescribeNetworkInterfaces",
    "ec2:DescribeSubnets",
    "ec2:DeleteNetworkInterface",
    "ec2:AssignPrivateIpAddresses",
    "ec2:UnassignPrivateIpAddresses",
}
EMITTED_METRICS = {
    value for name, value in vars(MetricName).items() if not name.startswith("_") and isinstance(value, str)
} | {USERNAME_COLLISIONS, REJECTED_USERNAMES, PUBLISH_FAILURE_METRIC}


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template()


def resources_of(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {name: r for name, r in template["Resources"].items() if r["Type"] == kind}


def functions(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return resources_of(template, "AWS::Serverless::Function")


def function_setting(template: dict[str, Any], function: dict[str, Any], key: str) -> Any:
    """A function property as SAM sees it: its own value, else the Globals one."""
    return function["Properties"].get(key, template.get("Globals", {}).get("Function", {}).get(key))


def mentions(value: Any, logical_id: str) -> bool:
    """Whether an intrinsic-laden value refers to the resource `logical_id`."""
    if isinstance(value, list):
        return any(mentions(item, logical_id) for item in value)
    if isinstance(value, str):
        return re.search(r"\$\{" + re.escape(logical_id) + r"[.}]", value) is not None
    if isinstance(value, dict):
        if value.get("Ref") == logical_id:
            return True
        if "Fn::GetAtt" in value and value["Fn::GetAtt"][0] == logical_id:
            return True
        return any(mentions(item, logical_id) for item in value.values())
    return False


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def statements(document: Any) -> Iterator[dict[str, Any]]:
    """The statements of a policy document, both branches of a conditional statement included."""
    for statement in as_list(document.get("Statement", [])):
        if isinstance(statement, dict) and "Fn::If" in statement:
            _, *branches = statement["Fn::If"]
            yield from (branch for branch in branches if isinstance(branch, dict) and "Effect" in branch)
        else:
            yield statement


def identity_statements(template: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every IAM statement that grants an identity (roles, managed/inline policies, SAM function
    Policies statements), with where it is."""
    for name, resource in template["Resources"].items():
        properties = resource.get("Properties", {})
        if resource["Type"] == "AWS::IAM::Role":
            for policy in properties.get("Policies", []):
                for statement in statements(policy["PolicyDocument"]):
                    yield f"{name}/{policy['PolicyName']}", statement
        elif resource["Type"] in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
            for statement in statements(properties["PolicyDocument"]):
                yield name, statement
        elif resource["Type"] == "AWS::Serverless::Function":
            for policy in as_list(properties.get("Policies", [])):
                if isinstance(policy, dict) and "Statement" in policy:
                    for statement in statements(policy):
                        yield name, statement


def audit_table_violations(template: dict[str, Any]) -> list[str]:
    """Grants on the Audit table beyond PutItem/Query, and SAM policy templates that name it."""
    problems = []
    for where, statement in identity_statements(template):
        actions = set(as_list(statement["Action"]))
        dynamodb = {a for a in actions if a.startswith("dynamodb:") or a == "*"}
        if mentions(statement.get("Resource"), "AuditTable") and dynamodb - AUDIT_ACTIONS:
            problems.append(f"{where}: {sorted(dynamodb - AUDIT_ACTIONS)} on the Audit table")
        if statement.get("Resource") == "*" and dynamodb:
            problems.append(f"{where}: {sorted(dynamodb)} on every table, the Audit table included")
    for name, function in functions(template).items():
        for policy in as_list(function["Properties"].get("Policies", [])):
            if isinstance(policy, dict) and "Statement" not in policy and mentions(policy, "AuditTable"):
                problems.append(f"{name}: SAM policy template {sorted(policy)} on the Audit table")
    return problems


def unscoped_grants(template: dict[str, Any]) -> list[str]:
    problems = []
    for where, statement in identity_statements(template):
        actions = set(as_list(statement["Action"]))
        wildcards = {a for a in actions if a.endswith("*")}
        if wildcards:
            problems.append(f"{where}: wildcard actions {sorted(wildcards)}")
        if "*" in as_list(statement.get("Resource")) and actions - UNSCOPABLE_ACTIONS:
            problems.append(f"{where}: {sorted(actions - UNSCOPABLE_ACTIONS)} on '*'")
    return problems


# --- runtimes, architecture, layers ---------------------------------------------------------------


def test_every_function_runs_a_current_python_on_arm64(template: dict[str, Any]) -> None:
    for name, function in functions(template).items():
        assert function_setting(template, function, "Runtime") in LAMBDA_PYTHON_RUNTIMES, name
        assert function_setting(template, function, "Architectures") == ["arm64"], name
    for name, layer in resources_of(template, "AWS::Serverless::LayerVersion").items():
        assert set(layer["Properties"]["CompatibleRuntimes"]) <= LAMBDA_PYTHON_RUNTIMES, name
        build = layer.get("Metadata", {}).get("BuildMethod")
        assert build is None or build in LAMBDA_PYTHON_RUNTIMES or build == "makefile", name


def test_the_core_layer_is_built_for_the_functions_runtime_and_architecture(template: dict[str, Any]) -> None:
    layer = template["Resources"]["CoreLayer"]
    assert layer["Metadata"] == {"BuildMethod": "makefile", "BuildArchitecture": "arm64"}
    makefile = (ROOT / layer["Properties"]["ContentUri"] / "Makefile").read_text()
    runtimes = {function_setting(template, f, "Runtime") for f in functions(template).values()}
    assert runtimes == {"python3.13"} == set(layer["Properties"]["CompatibleRuntimes"])
    assert "--platform manylinux2014_aarch64" in makefile and "--python-version 3.13" in makefile
    assert "PYTHON ?= python3.13" in makefile


def test_the_built_core_layer_ships_bytecode_for_every_module() -> None:
    """/opt is read-only on Lambda: a module without its .pyc is compiled at every cold start."""
    built = ROOT / ".aws-sam" / "build" / "CoreLayer" / "python"
    if not built.is_dir():
        pytest.skip("no sam build output (`make check-template` builds it before the suite runs)")
    sources = {path.relative_to(built) for path in built.rglob("*.py")}
    compiled = {
        path.parent.parent.relative_to(built) / f"{path.name.split('.')[0]}.py"
        for path in built.rglob("__pycache__/*.cpython-313.pyc")
    }
    assert sources and sources <= compiled
    assert all(path.name.endswith(".cpython-313.pyc") for path in built.rglob("*.pyc"))
    # Hash-based and never checked against the source: a zip does not keep file times exactly.
    header = (built / "redis_scim" / "__pycache__" / "__init__.cpython-313.pyc").read_bytes()[:8]
    assert int.from_bytes(header[4:8], "little") == 0b01


def test_every_function_has_the_core_layer(template: dict[str, Any]) -> None:
    shared = template["Globals"]["Function"].get("Layers", [])
    for name, function in functions(template).items():
        # SAM appends a function's own Layers to the Globals ones.
        layers = shared + function["Properties"].get("Layers", [])
        assert {"Ref": "CoreLayer"} in layers, name


def test_functions_that_read_the_policy_get_the_policy_layer(template: dict[str, Any]) -> None:
    default_path = template["Parameters"]["PolicyFile"]["Default"]
    assert default_path == "/opt/policy.yaml"  # PolicyLayer's ContentUri is mounted at /opt
    assert (ROOT / template["Resources"]["PolicyLayer"]["Properties"]["ContentUri"] / "policy.yaml").is_file()
    readers = [
        name for name, f in functions(template).items()
        if "POLICY" in f["Properties"].get("Environment", {}).get("Variables", {})
    ]
    assert readers
    for name in readers:
        assert {"Ref": "PolicyLayer"} in functions(template)[name]["Properties"]["Layers"], name


def test_the_deployed_policy_file_is_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    from redis_scim.policy import load_policy

    path = ROOT / "layers" / "policy" / "policy.yaml"
    for variable in set(re.findall(r"\$\{([A-Z0-9_]+)\}", path.read_text())):
        monkeypatch.setenv(variable, os.environ.get(variable, "redis://validation.invalid:6379"))
    assert load_policy(path).targets


# --- the change feed ------------------------------------------------------------------------------


def sqs_event_sources(template: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    for name, function in functions(template).items():
        for event in function["Properties"].get("Events", {}).values():
            if event["Type"] == "SQS":
                yield name, function, event["Properties"]


def number(template: dict[str, Any], value: Any, bound: str) -> int:
    """A literal, or the `bound` (Default/MinValue/MaxValue) of the parameter it refers to."""
    if isinstance(value, dict):
        return int(template["Parameters"][value["Ref"]][bound])
    return int(value)


def test_fifo_batch_sizes_are_within_what_lambda_accepts(template: dict[str, Any]) -> None:
    sources = list(sqs_event_sources(template))
    assert sources
    for name, _, source in sources:
        queue = template["Resources"][source["Queue"]["Fn::GetAtt"][0]]
        assert queue["Properties"]["FifoQueue"] is True
        size = source["BatchSize"]
        for bound in ("Default", "MinValue", "MaxValue") if isinstance(size, dict) else ("Default",):
            assert 1 <= number(template, size, bound) <= 10, (name, bound)
        assert source["FunctionResponseTypes"] == ["ReportBatchItemFailures"], name
        assert "MaximumBatchingWindowInSeconds" not in source, f"{name}: FIFO sources have no batching window"


def test_queue_visibility_is_at_least_six_times_the_consumer_timeout(template: dict[str, Any]) -> None:
    for name, function, source in sqs_event_sources(template):
        queue = template["Resources"][source["Queue"]["Fn::GetAtt"][0]]
        timeout = function_setting(template, function, "Timeout") or 3
        assert queue["Properties"]["VisibilityTimeout"] >= 6 * timeout, name


def test_the_change_queue_dead_letters_after_max_receive_count(template: dict[str, Any]) -> None:
    redrive = template["Resources"]["ChangeQueue"]["Properties"]["RedrivePolicy"]
    assert redrive["maxReceiveCount"] == {"Ref": "MaxReceiveCount"}
    dead_letters = template["Resources"][redrive["deadLetterTargetArn"]["Fn::GetAtt"][0]]["Properties"]
    assert dead_letters["FifoQueue"] is True  # a FIFO queue's dead-letter queue must be FIFO too
    assert dead_letters["MessageRetentionPeriod"] == 14 * 24 * 3600


# --- data -----------------------------------------------------------------------------------------


def test_tables_keep_their_data(template: dict[str, Any]) -> None:
    for name, table in resources_of(template, "AWS::DynamoDB::Table").items():
        properties = table["Properties"]
        assert table["DeletionPolicy"] == table["UpdateReplacePolicy"] == "Retain", name
        assert properties["DeletionProtectionEnabled"] is True, name
        assert properties["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True, name
        assert properties["BillingMode"] == "PAY_PER_REQUEST", name
        assert properties["SSESpecification"]["KMSMasterKeyId"] == {"Fn::GetAtt": ["DataKey", "Arn"]}, name
    key = template["Resources"]["DataKey"]
    assert key["DeletionPolicy"] == "Retain"  # the retained tables cannot be read without it
    assert key["Properties"]["EnableKeyRotation"] is True


def test_queues_and_the_token_secret_use_the_stack_key(template: dict[str, Any]) -> None:
    for name, queue in resources_of(template, "AWS::SQS::Queue").items():
        assert queue["Properties"]["KmsMasterKeyId"] == {"Ref": "DataKey"}, name
    assert template["Resources"]["ScimTokenSecret"]["Properties"]["KmsKeyId"] == {"Ref": "DataKey"}


@pytest.mark.parametrize(
    ("value", "accepted"),
    [
        ("", True),
        ("203.0.113.0/24", True),
        ("203.0.113.0/24,2001:db8::/32", True),
        ("203.0.113.0/24, 198.51.100.0/24", False),  # a space would become part of a CIDR
        ("203.0.113.0/24;198.51.100.0/24", False),
    ],
)
def test_the_allow_list_parameter_takes_comma_separated_cidrs(
    template: dict[str, Any], value: str, accepted: bool
) -> None:
    pattern = template["Parameters"]["IdpAllowedCidrs"]["AllowedPattern"]
    assert (re.fullmatch(pattern, value) is not None) is accepted


def test_audit_retention_reaches_the_writer(template: dict[str, Any]) -> None:
    assert template["Resources"]["AuditTable"]["Properties"]["TimeToLiveSpecification"] == {
        "AttributeName": "expires_at",
        "Enabled": True,
    }
    applier = template["Resources"]["AclApplierFunction"]["Properties"]["Environment"]["Variables"]
    assert applier["AUDIT_RETENTION_DAYS"] == {"Ref": "AuditRetentionDays"}
    assert applier["AUDIT_TABLE"] == {"Ref": "AuditTable"}


# --- least privilege ------------------------------------------------------------------------------


def test_the_audit_table_is_append_only_for_every_identity(template: dict[str, Any]) -> None:
    assert audit_table_violations(template) == []
    granted = [s for _, s in identity_statements(template) if mentions(s.get("Resource"), "AuditTable")]
    assert granted, "someone must be able to append to the audit trail"


@pytest.mark.parametrize(
    "breach",
    [
        {"Effect": "Allow", "Action": "dynamodb:UpdateItem", "Resource": {"Ref": "AuditTable"}},
        {"Effect": "Allow", "Action": "dynamodb:DeleteItem", "Resource": {"Fn::Sub": "${AuditTable.Arn}/*"}},
        {"Effect": "Allow", "Action": "dynamodb:*", "Resource": "*"},
    ],
)
def test_the_audit_check_catches_a_grant_that_could_rewrite_history(
    template: dict[str, Any], breach: dict[str, Any]
) -> None:
    broken = copy.deepcopy(template)
    broken["Resources"]["AclApplierRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"].append(breach)
    assert audit_table_violations(broken)


def test_the_audit_check_catches_a_sam_policy_template_on_the_audit_table(template: dict[str, Any]) -> None:
    broken = copy.deepcopy(template)
    broken["Resources"]["ScimApiFunction"]["Properties"]["Policies"] = [
        {"DynamoDBCrudPolicy": {"TableName": {"Ref": "AuditTable"}}}
    ]
    assert audit_table_violations(broken)


def test_no_grant_on_every_resource_where_an_arn_can_be_named(template: dict[str, Any]) -> None:
    assert unscoped_grants(template) == []
    broken = copy.deepcopy(template)
    broken["Resources"]["ScimApiRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"].append(
        {"Effect": "Allow", "Action": "sqs:SendMessage", "Resource": "*"}
    )
    assert unscoped_grants(broken) == ["ScimApiRole/scim-api: ['sqs:SendMessage'] on '*'"]


def test_functions_use_their_own_roles_without_managed_policies(template: dict[str, Any]) -> None:
    """SAM's generated roles bring managed policies on "*" (every log group; every queue for an
    SQS event source): each function has an explicit role instead."""
    for name, function in functions(template).items():
        role = function["Properties"].get("Role")
        assert role is not None and "Policies" not in function["Properties"], name
        role_properties = template["Resources"][role["Fn::GetAtt"][0]]["Properties"]
        assert role_properties.get("ManagedPolicyArns") is None, name


def test_each_function_writes_only_to_its_own_log_group(template: dict[str, Any]) -> None:
    for name, function in functions(template).items():
        log_group = template["Resources"][f"{name}LogGroup"]["Properties"]["LogGroupName"]
        function_name = function["Properties"]["FunctionName"]["Fn::Sub"]
        assert log_group["Fn::Sub"] == f"/aws/lambda/{function_name}", name
        role = template["Resources"][function["Properties"]["Role"]["Fn::GetAtt"][0]]
        document = role["Properties"]["Policies"][0]["PolicyDocument"]
        (logs,) = [s for s in statements(document) if s.get("Sid") == "WriteOwnLogs"]
        assert logs["Resource"] == {"Fn::GetAtt": [f"{name}LogGroup", "Arn"]}, name


def test_the_api_denies_sources_outside_the_allow_list(template: dict[str, Any]) -> None:
    policy = template["Resources"]["ScimApi"]["Properties"]["Auth"]["ResourcePolicy"]["CustomStatements"]
    (deny,) = [s for s in policy if s["Effect"] == "Deny"]
    assert deny["Condition"]["NotIpAddress"]["aws:SourceIp"]["Fn::If"][0] == "HasIdpAllowList"
    settings = template["Resources"]["ScimApi"]["Properties"]["MethodSettings"]
    assert all(setting["DataTraceEnabled"] is False for setting in settings)  # bodies may carry passwords


SAM_PYTHON = ROOT / ".venv-sam" / "bin" / "python"
TRANSFORM = """
import json, sys
from samtranslator.translator.transform import transform
from samtranslator.yaml_helper import yaml_parse
template = yaml_parse(sys.stdin.read())
for resource in template["Resources"].values():
    for key in ("CodeUri", "ContentUri"):
        if isinstance(resource.get("Properties", {}).get(key), str):
            resource["Properties"][key] = "s3://bucket/" + resource["Properties"][key]
class NoManagedPolicies:
    def load(self):
        return {}
print(json.dumps(transform(template, {}, NoManagedPolicies())))
"""


@pytest.mark.skipif(not SAM_PYTHON.exists(), reason="no SAM CLI venv (.venv-sam; `make check-template`)")
def test_the_transformed_template_grants_what_the_checks_saw() -> None:
    """The same checks on what CloudFormation receives after the SAM transform (policy templates
    expanded, roles generated), so nothing SAM adds widens access."""
    result = subprocess.run(
        [str(SAM_PYTHON), "-c", TRANSFORM],
        input=TEMPLATE.read_text(),
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "AWS_DEFAULT_REGION": "us-east-1", "SAM_CLI_TELEMETRY": "0"},
        check=True,
    )
    transformed = json.loads(result.stdout)
    assert audit_table_violations(transformed) == []
    assert unscoped_grants(transformed) == []
    for name, role in resources_of(transformed, "AWS::IAM::Role").items():
        assert not role["Properties"].get("ManagedPolicyArns"), name


# --- names the code uses --------------------------------------------------------------------------


def test_functions_get_every_setting_their_code_reads(template: dict[str, Any]) -> None:
    shared = set(template["Globals"]["Function"]["Environment"]["Variables"])
    needs = {
        "ScimApiFunction": {"DIRECTORY_TABLE", "CHANGE_QUEUE_URL", "TOKEN_SECRET_ID"},
        "AclApplierFunction": {
            "DIRECTORY_TABLE", "AUDIT_TABLE", "AUDIT_RETENTION_DAYS", "POLICY", "TARGET_SECRETS"
        },
        "ReconcilerFunction": {
            "DIRECTORY_TABLE", "AUDIT_TABLE", "AUDIT_RETENTION_DAYS", "POLICY", "TARGET_SECRETS"
        },
    }
    powertools = {"POWERTOOLS_SERVICE_NAME", "POWERTOOLS_METRICS_NAMESPACE", "POWERTOOLS_LOG_LEVEL"}
    for name, variables in needs.items():
        own = set(template["Resources"][name]["Properties"].get("Environment", {}).get("Variables", {}))
        assert variables | powertools <= shared | own, name


def alarms(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return resources_of(template, "AWS::CloudWatch::Alarm")


def alarm_metrics(alarm: dict[str, Any]) -> Iterator[dict[str, Any]]:
    properties = alarm["Properties"]
    if "MetricName" in properties:
        yield properties
    for query in properties.get("Metrics", []):
        if "MetricStat" in query:
            yield query["MetricStat"]["Metric"]


def test_alarms_watch_metrics_the_code_emits(template: dict[str, Any]) -> None:
    watched = set()
    for name, alarm in alarms(template).items():
        for metric in alarm_metrics(alarm):
            if metric["Namespace"] == "RedisScim":
                assert metric["MetricName"] in EMITTED_METRICS, name
                assert {"Name": "service", "Value": {"Ref": "AWS::StackName"}} in metric["Dimensions"], name
                watched.add(metric["MetricName"])
        actions = alarm["Properties"]["AlarmActions"]["Fn::If"]
        assert actions[0] == "HasAlarmTopic", name
    assert {
        MetricName.APPLY_FAILURES, MetricName.GHOSTS_FOUND, MetricName.DEPROVISION_LATENCY,
        MetricName.AUTH_FAILURES, MetricName.TOKEN_AGE_DAYS, MetricName.TOKEN_DAYS_TO_EXPIRY,
        MetricName.TARGETS_UNREACHABLE,
    } <= watched
    assert template["Globals"]["Function"]["Environment"]["Variables"]["POWERTOOLS_SERVICE_NAME"] == {
        "Ref": "AWS::StackName"
    }


def test_the_auth_failure_alarm_counts_every_rejection_reason(template: dict[str, Any]) -> None:
    reasons = {
        dimension["Value"]
        for metric in alarm_metrics(template["Resources"]["AuthFailuresAlarm"])
        for dimension in metric["Dimensions"]
        if dimension["Name"] == "reason"
    }
    assert reasons == {reason.value for reason in RejectionReason}


def test_the_deprovision_latency_alarm_uses_the_unit_the_engine_emits(template: dict[str, Any]) -> None:
    engine = (CORE / "sync" / "engine.py").read_text()
    assert 'name=MetricName.DEPROVISION_LATENCY, unit="Milliseconds"' in engine
    assert template["Resources"]["DeprovisionLatencyAlarm"]["Properties"]["Unit"] == "Milliseconds"


def substituted(text: str) -> str:
    """A Fn::Sub text with every ${...} replaced by a plausible value (numbers where JSON needs one)."""
    return re.sub(r"\$\{([^}]+)\}", lambda m: "60000" if m.group(1).endswith("Ms") else "x", text)


def test_the_dashboard_is_valid_json_showing_emitted_metrics(template: dict[str, Any]) -> None:
    dashboard = template["Resources"]["AuditDashboard"]["Properties"]
    body = json.loads(substituted(dashboard["DashboardBody"]["Fn::Sub"]))
    shown = set()
    for widget in body["widgets"]:
        for metric in widget["properties"].get("metrics", []):
            if metric[0] == "RedisScim":
                shown.add(metric[1])
            elif isinstance(metric[0], dict):
                shown.update(re.findall(r'MetricName=\\?"(\w+)\\?"', metric[0]["expression"]))
    assert shown <= EMITTED_METRICS
    assert {
        MetricName.PROVISIONED, MetricName.DEPROVISIONED, MetricName.DEPROVISION_LATENCY,
        MetricName.GHOSTS_FOUND, MetricName.DRIFT_CORRECTED, MetricName.APPLY_FAILURES,
        MetricName.AUTH_FAILURES,
    } <= shown
    alarm_widget = next(w for w in body["widgets"] if w["type"] == "alarm")
    assert len(alarm_widget["properties"]["alarms"]) == len(alarms(template))


def test_saved_queries_filter_on_messages_the_code_logs(template: dict[str, Any]) -> None:
    queries = resources_of(template, "AWS::Logs::QueryDefinition")
    sources = {
        '"audit record"': (CORE / "audit" / "store.py").read_text(),
        '"SCIM request rejected: no valid bearer token"': (CORE / "apigateway.py").read_text(),
        '"ghost user found"': (CORE / "sync" / "reconcile.py").read_text(),
    }
    used = set()
    for name, query in queries.items():
        text = query["Properties"]["QueryString"]
        for message in re.findall(r'message = ("[^"]+")', text):
            assert message in sources and message in sources[message], f"{name}: nobody logs {message}"
            used.add(message)
        for group in query["Properties"]["LogGroupNames"]:
            assert template["Resources"][group["Ref"]]["Type"] == "AWS::Logs::LogGroup", name
    assert used == set(sources)
    all_queries = " ".join(q["Properties"]["QueryString"] for q in queries.values())
    audit_fields = re.findall(r"audit\.([a-z_]+)", all_queries)
    record = (CORE / "audit" / "record.py").read_text()
    for field in set(audit_fields) - {"cause"}:
        assert re.search(rf"^\s+{field}: ", record, re.MULTILINE), f"audit records have no field {field}"


# --- the local stack builds exactly the template's tables and queues ------------------------------


def test_local_tables_and_queues_match_the_template(
    template: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with mock_aws():
        session = boto3.Session(region_name="us-east-1")
        local = create_resources(session, stack_name="drift-check")
        dynamodb, sqs = session.client("dynamodb"), session.client("sqs")
        tables = resources_of(template, "AWS::DynamoDB::Table")
        assert set(local.tables) == set(tables)
        for logical, table in tables.items():
            expected = table["Properties"]
            actual = dynamodb.describe_table(TableName=local.tables[logical])["Table"]
            name = expected["TableName"]["Fn::Sub"].replace("${AWS::StackName}", "drift-check")
            assert local.tables[logical] == name
            assert actual["KeySchema"] == expected["KeySchema"], logical
            attributes = sorted(expected["AttributeDefinitions"], key=str)
            assert sorted(actual["AttributeDefinitions"], key=str) == attributes, logical
            assert {
                index["IndexName"]: (index["KeySchema"], index["Projection"])
                for index in actual.get("GlobalSecondaryIndexes", [])
            } == {
                index["IndexName"]: (index["KeySchema"], index["Projection"])
                for index in expected.get("GlobalSecondaryIndexes", [])
            }, logical
            ttl = dynamodb.describe_time_to_live(TableName=local.tables[logical])["TimeToLiveDescription"]
            expected_ttl = expected.get("TimeToLiveSpecification", {})
            assert ttl.get("AttributeName") == expected_ttl.get("AttributeName"), logical
        queues = resources_of(template, "AWS::SQS::Queue")
        assert set(local.queues) == set(queues)
        for logical, queue in queues.items():
            expected = queue["Properties"]
            answer = sqs.get_queue_attributes(QueueUrl=local.queues[logical], AttributeNames=["All"])
            actual = answer["Attributes"]
            assert actual["FifoQueue"] == "true", logical
            for attribute in (
                "VisibilityTimeout", "MessageRetentionPeriod", "DeduplicationScope", "FifoThroughputLimit"
            ):
                if attribute in expected:
                    assert actual[attribute] == str(expected[attribute]), (logical, attribute)
            if "RedrivePolicy" in expected:
                redrive = json.loads(actual["RedrivePolicy"])
                assert redrive["maxReceiveCount"] == template["Parameters"]["MaxReceiveCount"]["Default"]
                assert redrive["deadLetterTargetArn"].endswith(":drift-check-changes-dlq.fifo")


# --- samconfig.toml -------------------------------------------------------------------------------


def test_samconfig_environments_set_only_parameters_the_template_accepts(template: dict[str, Any]) -> None:
    config = tomllib.loads((ROOT / "samconfig.toml").read_text())
    assert {"dev", "prod"} <= set(config)
    for environment in ("dev", "prod"):
        deploy = config[environment]["deploy"]["parameters"]
        assert deploy["capabilities"] == "CAPABILITY_IAM"  # the roles are unnamed
        for assignment in deploy["parameter_overrides"].split():
            name, _, value = assignment.partition("=")
            spec = template["Parameters"].get(name)
            assert spec is not None, f"{environment}: no parameter {name}"
            if "AllowedValues" in spec:
                assert value in map(str, spec["AllowedValues"]), (environment, name)
            if "MinValue" in spec:
                upper = spec.get("MaxValue", float("inf"))
                assert spec["MinValue"] <= float(value) <= upper, (environment, name)
            if "AllowedPattern" in spec:
                assert re.fullmatch(spec["AllowedPattern"], value), (environment, name)
    assert config["prod"]["deploy"]["parameters"]["confirm_changeset"] is True


def test_saved_queries_read_fields_the_code_logs(template: dict[str, Any]) -> None:
    """The top-level fields of the auth-failure and ghost queries are `extra` keys of those log calls."""
    queries = {
        "AuthenticationFailuresQuery": (
            CORE / "apigateway.py", ("reason", "token_id", "source_ip", "user_agent")
        ),
        "GhostFindingsQuery": (
            CORE / "sync" / "reconcile.py", ("target", "redis_username", "ghosts", "nodes")
        ),
    }
    for name, (source, fields) in queries.items():
        text = template["Resources"][name]["Properties"]["QueryString"]
        code = source.read_text()
        for field in fields:
            assert re.search(rf"(?<![.\w]){field}\b", text), f"{name} does not read {field}"
            assert f'"{field}":' in code, f"{name}: {source.name} logs no field {field}"
