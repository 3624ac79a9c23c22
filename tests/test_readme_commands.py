"""Every command in the README's code blocks is exercised by a named test, or by CI.

A command added to the README without a test covering it fails here: add the test, then the command to
``COVERED`` with the test's ``path::name``. The tests named must exist (checked below), so this list
cannot silently rot.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHELL_BLOCKS = {"", "bash", "sh", "shell", "console"}
CLI = ".venv/bin/python -m bridge_cli"

COVERED = {
    # The README's two commands.
    "make run": "tests/test_local_stack.py::test_make_run_starts_the_whole_bridge",
    "make test": "CI",  # .ci/run runs it on a fresh clone
    # Local stack and tools: each run as a subprocess against `make run`'s stack.
    f"{CLI} demo": "tests/test_local_stack.py::test_demo_sends_every_platform_and_shows_the_customers",
    f"{CLI} sign deliveroo order.json": "tests/test_local_stack.py::test_sign_with_the_environment_or_the_sandbox_makes_a_valid_webhook",
    f"{CLI} replay mews captured.json --url https://<bridge>/": "tests/test_local_stack.py::test_replay_signs_a_captured_webhook_unless_as_is",
    f"{CLI} dlq list": "tests/test_local_stack.py::test_dlq_list_shows_reasons_and_redrive_hands_jobs_back_to_the_worker",
    f"{CLI} dlq redrive --limit 10": "tests/test_local_stack.py::test_dlq_list_shows_reasons_and_redrive_hands_jobs_back_to_the_worker",
    f"{CLI} backfill customers.csv": "tests/test_local_stack.py::test_backfill_through_the_batch_endpoint_with_a_summary",
    # Tenants: connecting a restaurant, run in this order against the sandbox's APIs.
    f"{CLI} tenants new-secret --platform zelty": "tests/test_tenants_cli.py::test_onboarding_a_restaurant_as_the_readme_shows",
    f"{CLI} tenants check --file tenants.json --tenant le-bistrot":
        "tests/test_tenants_cli.py::test_onboarding_a_restaurant_as_the_readme_shows",
    f"{CLI} tenants urls --file tenants.json --tenant le-bistrot --base https://<bridge>/":
        "tests/test_tenants_cli.py::test_onboarding_a_restaurant_as_the_readme_shows",
    # Deploying to AWS.
    "make package": "tests/test_package.py::test_template_passes_cfn_lint",
    "make rehearse": "tests/test_rehearse.py::test_make_rehearse_creates_the_stack_and_runs_the_packaged_handlers",
    # Needs an AWS account and the AWS CLI: what runs without them is the documented failure.
    'make deploy S3_BUCKET=<bucket> PARAMETERS="SecretsId=fullwhere-bridge AlarmEmail=ops@example.com"':
        "tests/test_package.py::test_deploy_says_what_is_missing_without_the_aws_cli",
    # Needs an AWS account: the secret it creates (settings as one JSON object, read through SECRETS_ID) is
    # created on moto and read by the bridge in this test.
    "aws secretsmanager create-secret --name fullwhere-bridge --secret-string file://secret.json":
        "tests/test_settings.py::test_secret_document_fills_settings_and_the_environment_wins",
}


def readme_commands(text: str) -> list[str]:
    """The commands of the shell code blocks: comments and blank lines dropped, continuations joined."""
    commands: list[str] = []
    for info, body in re.findall(r"^```([^\n`]*)\n(.*?)^```", text, flags=re.M | re.S):
        if info.strip() not in SHELL_BLOCKS:
            continue
        pending = ""
        for line in body.splitlines():
            line = re.sub(r"\s+#\s.*$", "", line).strip()
            if not line or line.startswith("#"):
                continue
            if line.endswith("\\"):
                pending += line[:-1].strip() + " "
                continue
            commands.append(re.sub(r"\s+", " ", pending + line))
            pending = ""
    return commands


def test_every_readme_command_is_covered():
    commands = readme_commands((ROOT / "README.md").read_text())
    assert "make run" in commands and "make test" in commands
    uncovered = [command for command in commands if command not in COVERED]
    assert not uncovered, f"README commands that no test exercises (add a test, then list it in COVERED): {uncovered}"


def test_the_covering_tests_exist():
    for command, where in COVERED.items():
        if where == "CI":
            assert "make test" in (ROOT / ".ci" / "run").read_text()
            continue
        path, name = where.split("::")
        tree = ast.parse((ROOT / path).read_text())
        names = {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)}
        assert name in names, f"{command!r} is said to be covered by {where}, which does not exist"


def test_commands_are_read_from_shell_blocks_only():
    text = "```bash\nmake run  # start\n# a comment\nmake deploy A=1 \\\n  B=2\n```\n```json\n{\"not\": 1}\n```\n"
    assert readme_commands(text) == ["make run", "make deploy A=1 B=2"]
