"""Add precompiled bytecode to the zips of a ``chalice package`` output directory.

Chalice packages source only, and Lambda's code and layer filesystems are read-only, so without
``.pyc`` files every cold start compiles every module it imports (about twice the import time:
``../shared/platforms/chalice.md`` §1.5 gotcha 6, §3). For ``deployment.zip`` and
``layer-deployment.zip`` this script:

- drops whatever ``__pycache__`` Chalice copied from the working tree (timestamp-based, maybe stale);
- compiles every ``.py`` with ``--invalidation-mode unchecked-hash``: Python loads such a ``.pyc``
  without looking at the source's mtime, which zipping and extracting change;
- embeds the path the file will have on Lambda (``/var/task/...`` for the function code,
  ``/opt/...`` for the layer), so tracebacks name real paths;
- rewrites the zip in place, keeping every original entry as it was.

It must run with the Python version of the template's runtime (the ``.pyc`` format changes with
every minor version); it checks that. Usage::

    python deploy/precompile.py PACKAGE_DIR
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import py_compile
import re
import sys
import tempfile
import zipfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path, PurePosixPath

# Each zip of the package, and where Lambda extracts it.
ZIPS = {"deployment.zip": "/var/task", "layer-deployment.zip": "/opt"}
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)  # the timestamp Chalice gives every entry: reproducible zips


class PrecompileError(RuntimeError):
    pass


def runtime_version(package_dir: Path) -> tuple[int, int]:
    """The Python version of the functions' ``Runtime`` in the package's template (JSON or YAML)."""
    templates = sorted(package_dir.glob("sam.*"))
    if not templates:
        raise PrecompileError(f"no sam.json or sam.yaml in {package_dir}: is it a `chalice package` output?")
    found = set(re.findall(r'Runtime"?\s*:\s*"?python(\d+)\.(\d+)', templates[0].read_text()))
    if len(found) != 1:
        raise PrecompileError(f"expected one python runtime in {templates[0].name}, found {sorted(found) or 'none'}")
    major, minor = found.pop()
    return int(major), int(minor)


def _compile(task: tuple[str, str]) -> str | None:
    """Compile one source file; the error message if it does not compile."""
    source, lambda_path = task
    try:
        py_compile.compile(
            source,
            cfile=importlib.util.cache_from_source(source, optimization=""),
            dfile=lambda_path,
            doraise=True,
            optimize=0,
            invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH,
        )
    except py_compile.PyCompileError as exc:
        return f"{lambda_path}: {exc.msg.strip().splitlines()[-1]}"
    return None


def _is_bytecode(name: str) -> bool:
    # Only caches: a sourceless .pyc shipped by a package outside __pycache__ is a module, kept as is.
    return "__pycache__" in PurePosixPath(name).parts


def precompile_zip(zip_path: Path, lambda_root: str, pool: ProcessPoolExecutor) -> tuple[int, list[str]]:
    """Rewrite ``zip_path`` with a ``.pyc`` next to each module; (modules compiled, compile errors)."""
    with tempfile.TemporaryDirectory(prefix="precompile-") as scratch:
        root = Path(scratch)
        with zipfile.ZipFile(zip_path) as archive:
            entries = [(info, archive.read(info)) for info in archive.infolist() if not _is_bytecode(info.filename)]
        tasks = []
        for info, data in entries:
            if info.filename.endswith(".py") and not info.is_dir():
                source = root / info.filename
                source.parent.mkdir(parents=True, exist_ok=True)
                source.write_bytes(data)
                tasks.append((str(source), f"{lambda_root}/{info.filename}"))
        errors = [error for error in pool.map(_compile, tasks, chunksize=16) if error]

        rewritten = zip_path.with_name(zip_path.name + ".tmp")
        with zipfile.ZipFile(rewritten, "w", zipfile.ZIP_DEFLATED) as archive:
            for info, data in entries:
                archive.writestr(info, data)
            compiled = 0
            for source, _ in tasks:
                cache = Path(importlib.util.cache_from_source(source, optimization=""))
                if not cache.exists():  # it did not compile: listed in errors
                    continue
                info = zipfile.ZipInfo(cache.relative_to(root).as_posix(), ZIP_EPOCH)
                info.external_attr = 0o100644 << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                archive.writestr(info, cache.read_bytes())
                compiled += 1
        os.replace(rewritten, zip_path)
    return compiled, errors


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("package_dir", type=Path, help="the output directory of `chalice package`")
    args = parser.parse_args(argv)
    try:
        wanted = runtime_version(args.package_dir)
        if sys.version_info[:2] != wanted:
            raise PrecompileError(
                f"the template's runtime is python{wanted[0]}.{wanted[1]} but this is Python "
                f"{sys.version_info[0]}.{sys.version_info[1]}: run this script with python{wanted[0]}.{wanted[1]}"
            )
        failed = False
        with ProcessPoolExecutor() as pool:
            for name, lambda_root in ZIPS.items():
                path = args.package_dir / name
                if not path.exists():
                    raise PrecompileError(f"{path} is missing")
                before = path.stat().st_size
                compiled, errors = precompile_zip(path, lambda_root, pool)
                print(f"{name}: {compiled} modules precompiled for Python {wanted[0]}.{wanted[1]}, "
                      f"{before / 1e6:.2f} MB -> {path.stat().st_size / 1e6:.2f} MB")
                for error in errors:
                    print(f"  does not compile: {error}", file=sys.stderr)
                failed = failed or bool(errors)
    except PrecompileError as exc:
        print(f"precompile: {exc}", file=sys.stderr)
        return 2
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
