"""Render the course for reading: execute every notebook in full mode and keep the executed copies.

    python notebooks/render.py                 # all of them, into docs/course/ (`make course`)
    python notebooks/render.py 05 solutions/05 # only the notebooks whose path starts so
    python notebooks/render.py --fast --out /tmp/course   # fast mode, e.g. to try the script

Each notebook runs in a fresh kernel with papermill, from notebooks/ (where the committed results
are), with MINIFREEZE_FAST=0 (or 1 with --fast) and one OpenBLAS thread. The executed copy, with its
figures, is written to a temporary name and renamed when the notebook has run to the end, so a
failed notebook leaves its previous copy in place. Its metadata records the mode, the seconds it
took and where it ran, and a digest of each committed results folder it reads (`results_read`);
the out folder's README.md lists them. tests/test_course.py checks that every rendered copy's
cells are the source notebook's and that the results it read are still the committed ones, so a
change to a notebook, or a new committed run it reads, without re-rendering fails `make test`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
import time
from pathlib import Path

NOTEBOOKS = Path(__file__).resolve().parent
ROOT = NOTEBOOKS.parent
OUT = ROOT / "docs" / "course"


def sources() -> list[Path]:
    """The course notebooks, then the solutions, as notebooks/README.md lists them."""
    return sorted(NOTEBOOKS.glob("*.ipynb")) + sorted(NOTEBOOKS.glob("solutions/*.ipynb"))


RESULTS = NOTEBOOKS / "results"
READ_KINDS = (".json", ".csv", ".md")
"""The committed result files a notebook's numbers come from (not its figures, which `report`
draws from them)."""


def results_read(path: Path) -> dict[str, str]:
    """{folder: digest} for every folder of notebooks/results/ that notebook `path`'s code names
    ("results/collapse", RESULTS / "collapse", ...): the SHA-256 over that folder's data files,
    their paths and bytes. A copy rendered before one of them changed shows a different digest."""
    nb = json.loads(path.read_text())
    code = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
    named = set(re.findall(r"results[\"'/, ]+[\"']?([A-Za-z0-9_]+)", code, re.I))
    return {name: folder_digest(RESULTS / name) for name in sorted(named)
            if (RESULTS / name).is_dir()}


def folder_digest(folder: Path) -> str:
    """SHA-256 over the data files under `folder` (READ_KINDS), each its relative path and bytes."""
    h = hashlib.sha256()
    for p in sorted(q for q in folder.rglob("*") if q.is_file() and q.suffix in READ_KINDS):
        h.update(p.relative_to(folder).as_posix().encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()


def where() -> dict:
    """Where a rendering ran: the same record a training run keeps."""
    from minifreeze.lab.environment import environment
    return environment()


def rendered(out: Path) -> list[Path]:
    """The executed copies in `out`, in the order of `sources()` (a hidden name is a partial copy)."""
    return [p for p in sorted(out.glob("*.ipynb")) + sorted(out.glob("solutions/*.ipynb"))
            if not p.name.startswith(".")]


def render(path: Path, out: Path, fast: bool) -> dict:
    """Execute `path` into `out` (written under a temporary name, then renamed); its record."""
    import nbformat
    import papermill

    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.stem}.partial.ipynb")  # hidden: not listed, not tested
    read = results_read(path)  # before it runs: what it will have read
    start = time.perf_counter()
    papermill.execute_notebook(str(path), str(partial), cwd=str(NOTEBOOKS), kernel_name="python3",
                               progress_bar=False)
    seconds = round(time.perf_counter() - start, 1)
    nb = nbformat.read(partial, as_version=nbformat.NO_CONVERT)
    record = {"source": path.relative_to(NOTEBOOKS).as_posix(), "mode": "fast" if fast else "full",
              "seconds": seconds, "environment": where(), "results": read}
    pm = nb.metadata.get("papermill", {})  # papermill records absolute paths: keep them relative
    pm.update(input_path=f"notebooks/{record['source']}",
              output_path=out.relative_to(ROOT).as_posix() if out.is_relative_to(ROOT) else out.name)
    nb.metadata["minifreeze"] = record
    nbformat.write(nb, partial)
    os.replace(partial, out)
    return record


def index(out: Path) -> str:
    """The out folder's README.md: every rendered notebook, its mode and time, and where it ran."""
    import nbformat

    rows, machines, modes = [], set(), set()
    for path in rendered(out):
        rec = nbformat.read(path, as_version=nbformat.NO_CONVERT).metadata.get("minifreeze", {})
        modes.add(rec.get("mode", "?"))
        env = rec.get("environment", {})
        machines.add(f"{env.get('cpu', '?')}, {env.get('cpus', '?')} cores, NumPy {env.get('numpy', '?')}, "
                     f"Numba {env.get('numba', '?')}")
        name = path.relative_to(out).as_posix()
        rows.append(f"| [`{name}`]({name}) | {rec.get('mode', '?')} | {rec.get('seconds', float('nan')):.0f} |")
    return "\n".join([
        "# The course, executed",
        "",
        "Every notebook of `notebooks/`, run once " + ("in full mode (all 60,000 training images, the sizes a"
                                                      if modes == {"full"} else
                                                      "(some in FAST MODE, a smoke run: smaller sizes than a"),
        "student gets in Jupyter) with its figures and printed numbers, to read without running",
        "anything. Made by `make course` (`notebooks/render.py`); `tests/test_course.py` fails when a",
        "copy's cells differ from its source notebook's, so these are the notebooks as committed. The",
        "committed notebooks themselves carry no outputs. Times are wall-clock seconds on the machine",
        "below (other jobs may have shared its cores: upper bounds).",
        "",
        "Reading order (notebooks/README.md's, and 00's roadmap): the argument 00, 04, 06, 05, 07,",
        "10, 08, 09; the engine, 01-03, whenever \"how is this computed?\" comes up; the",
        "solutions after their notebooks. Every term on one page: [the cheat sheet](cheatsheet.md).",
        "",
        "| notebook | mode | seconds |",
        "| --- | --- | ---: |",
        *rows,
        "",
        "Ran on: " + "; ".join(sorted(machines)) + ".",
        "",
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("only", nargs="*", metavar="PREFIX",
                        help="render only the notebooks whose path in notebooks/ starts with one of these")
    parser.add_argument("--fast", action="store_true", help="fast mode (MINIFREEZE_FAST=1) instead of full")
    parser.add_argument("--out", type=Path, default=OUT, help=f"where the copies go (default {OUT.relative_to(ROOT)})")
    args = parser.parse_args(argv)

    chosen = [p for p in sources()
              if not args.only or any(p.relative_to(NOTEBOOKS).as_posix().startswith(s) for s in args.only)]
    if not chosen:
        parser.error(f"no notebook in notebooks/ starts with {args.only}; "
                     f"expected one of {[p.relative_to(NOTEBOOKS).as_posix() for p in sources()]}")
    os.environ["MINIFREEZE_FAST"] = "1" if args.fast else "0"
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    failed = []
    for path in chosen:
        name = path.relative_to(NOTEBOOKS).as_posix()
        print(f"{name} ...", flush=True)
        try:
            rec = render(path, args.out / name, args.fast)
        except Exception as err:  # papermill's PapermillExecutionError names the cell; go on with the rest
            why = f"{getattr(err, 'ename', type(err).__name__)}: {getattr(err, 'evalue', err)}"
            print(f"{name} FAILED in cell {getattr(err, 'exec_count', '?')}, its previous copy is kept: {why}")
            failed.append(name)
            continue
        print(f"{name}: {rec['seconds']:.0f} s", flush=True)
    (args.out / "README.md").write_text(index(args.out), encoding="utf-8")
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
