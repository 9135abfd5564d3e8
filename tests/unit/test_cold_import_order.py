"""ScimApiFunction's cold start loads scim2-models before boto3 and powertools.

pydantic (Python < 3.13) scans sys.modules at every frame of the import stack for each model it
reads attribute docstrings from, so scim2-models is cheapest to import while few modules are
loaded (docs/performance.md). Checked in a fresh interpreter, as Lambda imports the module.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

FUNCTION = Path(__file__).resolve().parents[2] / "functions" / "scim_api"
PROBE = """
import sys
seen = []
class Recorder:
    def find_spec(self, name, path=None, target=None):
        seen.append(name)
sys.meta_path.insert(0, Recorder())
import app
print(seen.index("scim2_models"), seen.index("boto3"), seen.index("aws_lambda_powertools"))
"""


def test_scim2_models_is_imported_before_boto3_and_powertools() -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("AWS_")}
    env |= {
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9",  # nothing listens: import makes no AWS call
        "CHANGE_QUEUE_URL": "https://sqs.us-east-1.amazonaws.com/123456789012/changes.fifo",
    }
    completed = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=FUNCTION, env=env, capture_output=True, text=True, check=True
    )
    scim2_models, boto3, powertools = map(int, completed.stdout.split()[-3:])
    assert scim2_models < boto3
    assert scim2_models < powertools
