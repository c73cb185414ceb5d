"""`make compiled` / `make pure`: build or remove the mypyc-compiled sans-IO core.

``python -m shared.build_compiled`` compiles `shared.compiled.MODULES` in place (C files
under build/, the extensions beside their sources) and writes the stamp that
`shared.compiled` checks at import, unless that stamp says the build is up to date
(``--force`` builds anyway); ``--clean`` removes the extensions and the stamp;
``--status`` prints which core a process would run.  See `shared.compiled` for how the
choice is made at run time.
"""

from __future__ import annotations

import importlib.machinery
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from shared.compiled import GROUP, MODULES, ROOT, STAMP, digest, extensions, mode, source, stale


def clean() -> int:
    removed = [p for m in MODULES for p in extensions(m)]
    removed += sorted(STAMP.parent.glob(GROUP.rsplit(".", 1)[1] + "__mypyc.*"))
    for path in removed:
        path.unlink()
    STAMP.unlink(missing_ok=True)
    print(f"sipmesh compiled core: removed {len(removed)} files; pure Python runs")
    return 0


def build(jobs: int = 2) -> int:
    """Compile MODULES with mypyc in place (a temporary build directory under build/)."""
    import sysconfig

    from mypyc.build import mypycify  # the mypy package (a dev dependency)
    from setuptools import Distribution

    include = sysconfig.get_paths()["include"]
    if not Path(include, "Python.h").exists():
        print(f"sipmesh compiled core: no Python headers in {include}; pure Python runs",
              file=sys.stderr)
        return 1
    clean()
    # The sources' digests are taken before mypyc reads them: a source edited while the
    # build runs must leave the stamp saying "edited", not vouch for code never compiled.
    sources = {m: digest(source(m)) for m in MODULES}
    cwd = Path.cwd()
    os.chdir(ROOT)  # mypyc names modules after paths relative to the current directory
    try:
        paths = [str(source(m).relative_to(ROOT)) for m in MODULES]
        # One C file per module (multi_file) so that `jobs` compilers run side by side.
        # The C compiler's optimisation: 2 for the build that runs; the compiled test sets
        # SIPMESH_COMPILED_OPT=0 (the same mypyc semantics, about half the compile time).
        ext_modules = mypycify(paths, group_name=GROUP,
                               opt_level=os.environ.get("SIPMESH_COMPILED_OPT", "2"),
                               debug_level="0", multi_file=True)
        for ext in ext_modules:  # the group's header sits in build/shared/, not build/
            ext.include_dirs.append(str(Path("build", *GROUP.split(".")[:-1])))
        dist = Distribution({"name": "sipmesh-compiled", "ext_modules": ext_modules})
        cmd = dist.get_command_obj("build_ext")
        cmd.inplace = True
        cmd.parallel = jobs
        cmd.ensure_finalized()
        cmd.run()
    finally:
        os.chdir(cwd)
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    STAMP.write_text(json.dumps({
        "suffix": suffix,
        "sources": sources,
    }, indent=1) + "\n")
    print(f"sipmesh compiled core: {len(MODULES)} modules compiled (mypyc)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if "--clean" in args:
        return clean()
    if not args or args == ["--force"]:
        if not args and stale() is None:
            print("sipmesh compiled core: up to date")
            return 0
        return build()
    print(f"sipmesh compiled core: {mode()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
