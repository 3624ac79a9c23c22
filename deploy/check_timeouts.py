"""Refuse a package whose retry worker cannot finish one attempt, or whose queue would hand a batch out twice.

``make package`` runs it before ``chalice package``. Two rules, each a reason to stop with a message:

- the worker's ``lambda_timeout`` (``.chalice/config.json``) is at least what one attempt needs: two HTTP
  calls (a platform fetch and a Fullwhere import, ``WORKER_CALL_TIMEOUT_SECONDS`` each), the time the worker
  keeps in reserve (``LAMBDA_SAFETY_SECONDS``), the time to queue again what must come back
  (``BUNDLE_SEND_SECONDS``), and one second. A shorter one hands every record back untried, forever;
- the retry queue's ``VisibilityTimeout`` (``deploy/resources.yaml``) is at least 6 times that timeout, AWS's
  advice for an SQS event source: a batch still being worked on (or retried after throttling) must not
  become visible, and be handed out, a second time.

Runs with the project's virtualenv (it imports the bridge's settings and worker for their figures). Usage::

    python deploy/check_timeouts.py [--stage dev] [--config .chalice/config.json] [--template deploy/resources.yaml]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
WORKER = "retry_worker"  # the Chalice name of the function consuming the retry queue (app.py)
CHALICE_DEFAULT_TIMEOUT = 60  # what Chalice gives a function whose config states none
VISIBILITY_FACTOR = 6


class Refused(Exception):
    """A reason to refuse the package, for the user."""


def worker_config(config: dict[str, Any], stage: str) -> dict[str, Any]:
    """The worker's effective Chalice settings, by Chalice's precedence: the stage's function block, then the
    stage, then the top level's function block, then the top level."""
    stage_config = config.get("stages", {}).get(stage, {})  # Chalice packages an unlisted stage too
    merged: dict[str, Any] = {}
    for layer in (config, config.get("lambda_functions", {}).get(WORKER, {}),
                  stage_config, stage_config.get("lambda_functions", {}).get(WORKER, {})):
        variables = {**merged.get("environment_variables", {}), **layer.get("environment_variables", {})}
        merged.update({key: value for key, value in layer.items() if key not in ("stages", "lambda_functions")})
        merged["environment_variables"] = variables
    return merged


def needed_seconds(call_timeout: float, source: str) -> tuple[float, str]:
    """What one attempt needs, and the sum spelled out (``source``: where ``call_timeout`` comes from)."""
    from chalicelib.handlers.retry_worker import BUNDLE_SEND_SECONDS, LAMBDA_SAFETY_SECONDS

    needed = 2 * call_timeout + LAMBDA_SAFETY_SECONDS + BUNDLE_SEND_SECONDS + 1
    return needed, (f"{needed:g} s = 2 HTTP calls x {call_timeout:g} s ({source}) + {LAMBDA_SAFETY_SECONDS:g} s "
                    f"(LAMBDA_SAFETY_SECONDS) + {BUNDLE_SEND_SECONDS:g} s (BUNDLE_SEND_SECONDS) + 1 s")


def call_timeout(worker: dict[str, Any]) -> tuple[float, str, str]:
    """(seconds, where they come from, the variable): WORKER_CALL_TIMEOUT_SECONDS as the Chalice config sets
    it for the worker, else the setting's default (a value in the Secrets Manager secret is not known here)."""
    from chalicelib.infra.settings import Settings

    variable = Settings.variable("worker_call_timeout_seconds")
    value = worker["environment_variables"].get(variable)
    if value is not None:
        return float(value), f"{variable}, set in the Chalice config", variable
    return float(Settings.model_fields["worker_call_timeout_seconds"].default), f"{variable}, its default", variable


def visibility_timeout(template_path: Path) -> int:
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    # CloudFormation's short forms (!Ref, !Sub, ...): their values do not matter here.
    Loader.add_multi_constructor("!", lambda loader, suffix, node: None)
    template = yaml.load(template_path.read_text(), Loader=Loader)
    try:
        return int(template["Resources"]["RetryQueue"]["Properties"]["VisibilityTimeout"])
    except (KeyError, TypeError, ValueError):
        raise Refused(f"{template_path}: no number in Resources.RetryQueue.Properties.VisibilityTimeout") from None


def check(config_path: Path, template_path: Path, stage: str) -> tuple[list[str], str]:
    """(what is wrong, empty when the package may be built; the figures, in one line)."""
    worker = worker_config(json.loads(config_path.read_text()), stage)
    timeout = worker.get("lambda_timeout", CHALICE_DEFAULT_TIMEOUT)
    seconds, source, variable = call_timeout(worker)
    needed, spelled = needed_seconds(seconds, source)
    problems = []
    if timeout < needed:
        problems.append(
            f"the retry worker's lambda_timeout ({timeout:g} s, {_shown(config_path)}, stage {stage}) is shorter "
            f"than one attempt needs: {spelled} (chalicelib/handlers/retry_worker.py). Without that time the "
            f"worker hands every record back untried. Raise lambda_functions.{WORKER}.lambda_timeout, or lower "
            f"{variable}")
    visibility = visibility_timeout(template_path)
    if visibility < VISIBILITY_FACTOR * timeout:
        problems.append(
            f"the retry queue's VisibilityTimeout ({visibility} s, {_shown(template_path)}) is shorter than "
            f"{VISIBILITY_FACTOR} x the retry worker's lambda_timeout ({VISIBILITY_FACTOR * timeout:g} s): a batch "
            f"still being worked on would be handed out again. Raise it (at most 43200) or lower the timeout")
    summary = (f"retry worker timeout {timeout:g} s >= {needed:g} s for one attempt; retry queue visibility "
               f"{visibility} s >= {VISIBILITY_FACTOR} x {timeout:g} s")
    return problems, summary


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--stage", default="dev")
    parser.add_argument("--config", type=Path, default=ROOT / ".chalice" / "config.json")
    parser.add_argument("--template", type=Path, default=ROOT / "deploy" / "resources.yaml")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))  # the bridge's modules, for their figures
    try:
        problems, summary = check(args.config, args.template, args.stage)
    except (Refused, OSError, ValueError) as exc:
        problems, summary = [str(exc)], ""
    for problem in problems:
        print(f"make package: {problem}.", file=sys.stderr)
    if problems:
        return 1
    print(f"timeouts: {summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
