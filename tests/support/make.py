"""Running the Makefile's targets from tests, as a user would, but in the virtualenv running the tests."""

from __future__ import annotations

import os
import sys


def make_command(target: str, *arguments: str) -> list[str]:
    """``make <target>`` in this virtualenv, never rebuilt from here (-o: consider it up to date)."""
    venv = [] if sys.prefix == sys.base_prefix else [f"VENV={sys.prefix}", "-o", f"{sys.prefix}/.installed"]
    return ["make", "--no-print-directory", *venv, target, *arguments]


def environment_without_aws(**extra: str) -> dict[str, str]:
    """This environment with no AWS credentials, profile nor metadata service: what needs no account proves it."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("AWS_")}
    env.update(AWS_EC2_METADATA_DISABLED="true", AWS_CONFIG_FILE=os.devnull, AWS_SHARED_CREDENTIALS_FILE=os.devnull)
    env.update(extra)
    return env
