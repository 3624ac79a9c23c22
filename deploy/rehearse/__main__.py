"""python -m deploy.rehearse [--package-dir DIR] [--template FILE] [--parameters KEY=VALUE ...]"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .errors import RehearsalFailed
from .scenario import Rehearsal


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.rehearse", description=__doc__.split("\n")[0])
    parser.add_argument("--package-dir", type=Path, default=Path("build/package"),
                        help="what make package built: sam.yaml and the zips (default build/package)")
    parser.add_argument("--template", type=Path,
                        help="rehearse this template instead of the package's sam.yaml (its CodeUri and ContentUri "
                             "are read relative to --package-dir)")
    parser.add_argument("--parameters", nargs="*", default=[], metavar="KEY=VALUE",
                        help="template parameters, as make deploy's PARAMETERS")
    args = parser.parse_args(argv)
    overrides = {}
    for item in args.parameters:
        key, sep, value = item.partition("=")
        if not sep:
            parser.error(f"--parameters takes KEY=VALUE, not {item!r}")
        overrides[key] = value
    try:
        Rehearsal(args.package_dir, args.template, overrides, say=lambda line: print(line, flush=True)).run()
    except RehearsalFailed as failure:
        print(f"REHEARSAL FAILED: {failure}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
