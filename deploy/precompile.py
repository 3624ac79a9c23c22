"""Add precompiled bytecode to the zips of a ``chalice package`` output directory, and trim the layer.

Lambda's filesystems are read-only, so without ``.pyc`` files every cold start compiles every module it
imports. ``deployment.zip`` (the bridge, ``/var/task``) gets a ``__pycache__`` ``.pyc`` beside each source;
``layer-deployment.zip`` (the dependencies, ``/opt``) must stay small, so each ``.py`` is replaced by its
``.pyc`` and files the runtime never reads are left out. The layout, what is dropped and why:
docs/performance.md, "How the package is built". Must run with the Python of the template's runtime (it
checks). Usage::

    python deploy/precompile.py PACKAGE_DIR
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)  # the timestamp Chalice gives every entry: reproducible zips
COMPRESS_LEVEL = 9


@dataclass(frozen=True)
class Layout:
    """How one zip of the package is compiled."""

    lambda_root: str  # where Lambda extracts the zip
    sourceless: bool  # replace each .py by its .pyc (else add __pycache__/*.pyc beside it)
    drop: tuple[re.Pattern[str], ...] = ()  # entries the runtime never reads


# Never needed by the runtime (docs/performance.md, "How the package is built").
LAYER_DROP = tuple(re.compile(pattern) for pattern in (
    r"\.pyi$",
    r"(^|/)py\.typed$",
    r"\.dist-info/RECORD$",
    r"\.data/scripts/",
    r"(^|/)yaml/_yaml\.[^/]*\.so$",
))

LAYOUTS = {
    "deployment.zip": Layout("/var/task", sourceless=False),
    "layer-deployment.zip": Layout("/opt", sourceless=True, drop=LAYER_DROP),
}


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


def _is_bytecode(name: str) -> bool:
    # Only caches: a sourceless .pyc shipped by a package outside __pycache__ is a module, kept as is.
    return "__pycache__" in PurePosixPath(name).parts


def _cache_name(source: str) -> str:
    path = PurePosixPath(source)
    tag = sys.implementation.cache_tag
    return str(path.parent / "__pycache__" / f"{path.stem}.{tag}.pyc").removeprefix("./")


def _compile_tree(root: Path, layout: Layout) -> str:
    """Compile every .py under ``root`` with the standard library's compileall; its error output."""
    command = [sys.executable, "-m", "compileall", "-q", "-j", "0", "--invalidation-mode", "unchecked-hash",
               "-s", str(root), "-p", layout.lambda_root]
    if layout.sourceless:
        command.append("-b")
    # No column tables (PEP 657): they make a large part of a .pyc. The workers compileall forks inherit this.
    env = {**os.environ, "PYTHONNODEBUGRANGES": "1"} if layout.sourceless else dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    result = subprocess.run([*command, str(root)], env=env, capture_output=True, text=True)
    if result.returncode != 0:
        return (result.stdout + result.stderr).strip() or f"compileall exited with {result.returncode}"
    return ""


def _entry(name: str, data: bytes) -> tuple[zipfile.ZipInfo, bytes]:
    info = zipfile.ZipInfo(name, ZIP_EPOCH)
    info.external_attr = 0o100644 << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    return info, data


def intact(zip_path: Path) -> bool:
    """Every entry of the zip reads back with its CRC."""
    try:
        with zipfile.ZipFile(zip_path) as archive:
            return archive.testzip() is None
    except (zipfile.BadZipFile, OSError):
        return False


def restore_from_cache(zip_path: Path, cache_dir: Path, attempts: int = 10, wait: float = 0.5) -> Path | None:
    """Replace a corrupt copy by the intact zip of the same size in chalice's cache; the one used, or None.

    ``chalice package`` writes the layer into its cache (``.chalice/deployments``) and copies it out; that
    copy has been found corrupt while the cache was intact (docs/performance.md, "How the package is
    built"). Tried ``attempts`` times, ``wait`` seconds apart, while the cache settles.
    """
    size = zip_path.stat().st_size
    for attempt in range(attempts):
        if attempt:
            time.sleep(wait)
        for candidate in sorted(cache_dir.glob("*.zip"), key=lambda path: path.stat().st_mtime, reverse=True):
            if candidate.stat().st_size == size and intact(candidate):
                zip_path.write_bytes(candidate.read_bytes())
                if intact(zip_path):
                    return candidate
    return None


def precompile_zip(zip_path: Path, layout: Layout) -> tuple[int, int, str]:
    """Rewrite ``zip_path``; (modules compiled, entries dropped, compile errors)."""
    with tempfile.TemporaryDirectory(prefix="precompile-") as scratch:
        root = Path(scratch)
        with zipfile.ZipFile(zip_path) as archive:
            infos = [info for info in archive.infolist() if not _is_bytecode(info.filename)]
            kept = [info for info in infos if not any(rule.search(info.filename) for rule in layout.drop)]
            entries = [(info, archive.read(info)) for info in kept]
        sources = {info.filename for info, _ in entries if info.filename.endswith(".py") and not info.is_dir()}
        for info, data in entries:
            if info.filename in sources:
                (root / info.filename).parent.mkdir(parents=True, exist_ok=True)
                (root / info.filename).write_bytes(data)
        errors = _compile_tree(root, layout)

        def bytecode(source: str) -> Path:
            return root / (source + "c" if layout.sourceless else _cache_name(source))

        compiled = [source for source in sources if bytecode(source).exists()]
        replaced = set(compiled) if layout.sourceless else set()
        rewritten = zip_path.with_name(zip_path.name + ".tmp")
        with zipfile.ZipFile(rewritten, "w", zipfile.ZIP_DEFLATED, compresslevel=COMPRESS_LEVEL) as archive:
            for info, data in entries:
                if info.filename in replaced:
                    archive.writestr(*_entry(info.filename + "c", bytecode(info.filename).read_bytes()))
                else:
                    archive.writestr(info, data)
            if not layout.sourceless:
                for source in compiled:
                    archive.writestr(*_entry(_cache_name(source), bytecode(source).read_bytes()))
        os.replace(rewritten, zip_path)
    return len(compiled), len(infos) - len(kept), errors


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("package_dir", type=Path, help="the output directory of `chalice package`")
    parser.add_argument("--cache-dir", type=Path, default=Path(".chalice/deployments"),
                        help="chalice's cache of built zips, to copy a corrupt one again from")
    args = parser.parse_args(argv)
    try:
        wanted = runtime_version(args.package_dir)
        if sys.version_info[:2] != wanted:
            raise PrecompileError(
                f"the template's runtime is python{wanted[0]}.{wanted[1]} but this is Python "
                f"{sys.version_info[0]}.{sys.version_info[1]}: run this script with python{wanted[0]}.{wanted[1]}"
            )
        failed = False
        total = 0
        for name, layout in LAYOUTS.items():
            path = args.package_dir / name
            if not path.exists():
                raise PrecompileError(f"{path} is missing")
            if not intact(path):
                source = restore_from_cache(path, args.cache_dir)
                if source is None:
                    raise PrecompileError(f"{path} is corrupt and {args.cache_dir} holds no intact copy of it")
                print(f"{name}: chalice's copy was corrupt; copied again from {source}")
            before = path.stat().st_size
            compiled, dropped, errors = precompile_zip(path, layout)
            total += path.stat().st_size
            how = "sourceless, " if layout.sourceless else ""
            print(f"{name}: {compiled} modules precompiled for Python {wanted[0]}.{wanted[1]} ({how}{dropped} files "
                  f"left out), {before / 1e6:.2f} MB -> {path.stat().st_size / 1e6:.2f} MB")
            if errors:
                print(f"  does not compile:\n{errors}", file=sys.stderr)
            failed = failed or bool(errors)
        print(f"package: {total / 1e6:.2f} MB compressed (deployment.zip + layer-deployment.zip)")
    except PrecompileError as exc:
        print(f"precompile: {exc}", file=sys.stderr)
        return 2
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
