"""What the benchmarks share: medians, one printed line per figure, and the bridge set up on a sandbox.

Every figure is printed beside the baseline (its floor) measured in the same run, with the ratio and
the issue's limit, e.g.::

    end-to-end   mews             12.41 ms   floor 11.90 ms   1.04x   limit 1.10x   ok
"""

from __future__ import annotations

import os
import statistics
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent  # run as `python -m benchmarks[.name]` from here


@dataclass(frozen=True)
class Figure:
    target: str
    subject: str
    value: float
    baseline: float | None
    unit: str
    limit: float | None  # None: a figure printed for context, with no target of its own
    # "ratio": value / baseline must stay within limit; "absolute": value itself must.
    kind: str = "ratio"
    note: str = ""

    @property
    def ratio(self) -> float | None:
        return self.value / self.baseline if self.baseline else None

    @property
    def ok(self) -> bool:
        if self.limit is None:
            return True
        measured = self.ratio if self.kind == "ratio" else self.value
        return measured is not None and measured <= self.limit

    def line(self) -> str:
        baseline = f"floor {self.baseline:9.3f} {self.unit}" if self.baseline is not None else " " * 19
        ratio = f"{self.ratio:5.2f}x" if self.ratio is not None else "      "
        if self.limit is None:
            limit, verdict = "(no target)", "info"
        else:
            limit = f"limit {self.limit:.2f}x" if self.kind == "ratio" else f"limit {self.limit:g} {self.unit}"
            verdict = "ok" if self.ok else "MISSED"
        note = f"   ({self.note})" if self.note else ""
        return (f"{self.target:<14} {self.subject:<28} {self.value:9.3f} {self.unit}   {baseline}   {ratio}   "
                f"{limit:<16} {verdict}{note}")


RESULTS: list[Figure] = []
_OUT = sys.stdout  # the benchmark's own output, even while the bridge's log lines are silenced


def say(text: str) -> None:
    print(text, file=_OUT, flush=True)


def report(figure: Figure) -> Figure:
    RESULTS.append(figure)
    say(figure.line())
    return figure


def median(values: Iterable[float]) -> float:
    return statistics.median(list(values))


def configure_bridge(environment: dict[str, str], **overrides: str) -> None:
    """Point the bridge (in this process) at ``environment`` and forget whatever it cached."""

    for key in ("TENANTS_FILE", "TENANTS_SECRET_ID", "SECRETS_ID", "SOURCES_SECRET_ID"):
        os.environ.pop(key, None)
    os.environ.update(environment)
    os.environ.update(overrides)
    from sandbox.stack import reset_bridge_caches

    reset_bridge_caches()


class Silenced:
    """``with Silenced():`` the bridge's JSON log lines (written to ``sys.stdout`` at emit time) go to
    /dev/null, so the benchmark's own output stays readable. They are still built and written: their
    cost stays in every figure."""

    _devnull = None

    def __enter__(self) -> None:
        if Silenced._devnull is None:
            Silenced._devnull = open(os.devnull, "w")  # noqa: SIM115 - kept for the life of the process
        self._stdout, sys.stdout = sys.stdout, Silenced._devnull

    def __exit__(self, *exc_info) -> None:
        sys.stdout = self._stdout


def summary() -> int:
    """Print every figure again, grouped; exit status 1 when a target is missed."""
    if not RESULTS:
        return 0
    say("\nsummary")
    for figure in RESULTS:
        say("  " + figure.line())
    missed = [figure for figure in RESULTS if not figure.ok]
    say(f"\n{len(RESULTS) - len(missed)} of {len(RESULTS)} figures within their limit")
    return 1 if missed else 0


# -- the AWS package, as `make package` builds it ---------------------------------------------------

LAYER_SITE_PACKAGES = "python/lib/python3.11/site-packages"


@dataclass(frozen=True)
class Package:
    dir: Path
    sizes: dict[str, int]  # bytes of each zip, as shipped
    chalice_sizes: dict[str, float]  # MB of each zip as `chalice package` wrote it (before deploy/precompile.py)


def build_package(out: Path) -> Package:
    """Run ``make package`` into ``out`` (no AWS account needed; cfn-lint skipped, the tests run it)."""
    import re
    import subprocess

    env = {key: value for key, value in os.environ.items() if not key.startswith("AWS_")}
    env.update(AWS_DEFAULT_REGION="eu-west-3", AWS_EC2_METADATA_DISABLED="true",
               AWS_CONFIG_FILE=os.devnull, AWS_SHARED_CREDENTIALS_FILE=os.devnull)
    venv = [f"VENV={sys.prefix}", "-o", f"{sys.prefix}/.installed"] if sys.prefix != sys.base_prefix else []
    result = subprocess.run(["make", "--no-print-directory", *venv, "package", f"PACKAGE_DIR={out}", "CFN_LINT=true"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    if result.returncode != 0:
        raise RuntimeError(f"make package failed:\n{result.stdout}\n{result.stderr}")
    chalice_sizes = {name: float(before) for name, before in
                     re.findall(r"^(\S+\.zip): .*?([\d.]+) MB -> [\d.]+ MB$", result.stdout, re.MULTILINE)}
    sizes = {name: (out / name).stat().st_size for name in ("deployment.zip", "layer-deployment.zip")}
    return Package(out, sizes, chalice_sizes)


def extract_for_lambda(package: Package, root: Path) -> tuple[Path, Path]:
    """Unzip as Lambda does: the function code in ``root/task``, the layer in ``root/opt``."""
    import zipfile

    for name, where in (("deployment.zip", "task"), ("layer-deployment.zip", "opt")):
        with zipfile.ZipFile(package.dir / name) as archive:
            archive.extractall(root / where)
    return root / "task", root / "opt" / LAYER_SITE_PACKAGES
