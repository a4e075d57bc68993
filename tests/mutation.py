"""Mutation testing of the modules whose silent failure corrupts training (`make mutation`; not part of `make test`).

mutmut changes one thing at a time in `MODULES` (an operator, a constant, a keyword argument, ...) and runs the tests
that guard them; a mutant that no test notices "survived". The score is the share of mutants killed.

`trainer/` installs as `versavit_trainer`, and mutmut names mutants after the folder they live in, so the run happens
in a scratch folder (`.cache/mutation/`, ignored by git) that presents the sources under their import names:
`modeling_versavit`, `versavit_trainer` and `tests` are links to this checkout, its `setup.cfg` is the project's
pytest section plus the `[mutmut]` one written here. Results stay there: `python tests/mutation.py` prints the score
per module and each survivor's diff (`mutmut show NAME` in that folder shows one again).

    python tests/mutation.py            # run (mutmut reuses the results of unchanged functions) and report
    python tests/mutation.py --report   # report the last run only
"""

import argparse
import configparser
import json
import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRATCH = ROOT / ".cache" / "mutation"
# module (as the scratch folder names it) -> the tests that guard it
MODULES = {
    "modeling_versavit/losses_versavit.py": ["tests/test_losses.py"],
    "versavit_trainer/core/schedule.py": ["tests/test_schedule.py"],
}
LINKS = {"modeling_versavit": ROOT / "modeling_versavit", "versavit_trainer": ROOT / "trainer", "tests": ROOT / "tests"}


def prepare() -> None:
    SCRATCH.mkdir(parents=True, exist_ok=True)
    for name, target in LINKS.items():
        link = SCRATCH / name
        if not link.is_symlink():
            link.symlink_to(target, target_is_directory=True)
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    pytest_section = {key: value for key, value in config["tool:pytest"].items()}
    cfg = configparser.ConfigParser()
    cfg["tool:pytest"] = pytest_section
    tests = sorted({test for selection in MODULES.values() for test in selection})
    cfg["mutmut"] = {
        "source_paths": "\n" + "\n".join(sorted({path.split("/")[0] for path in MODULES})),
        "only_mutate": "\n" + "\n".join(MODULES),
        "pytest_add_cli_args_test_selection": "\n" + "\n".join(tests),
        "pytest_add_cli_args": "\n-p\nno:cacheprovider",
        # torch does not survive a fork from a process that already ran it: fork workers from a clean server
        "process_isolation": "forkserver",
    }
    with open(SCRATCH / "setup.cfg", "w") as handle:
        cfg.write(handle)


def run(children: int) -> None:
    mutmut = Path(sys.executable).with_name("mutmut")
    with open(SCRATCH / "run.log", "w") as log:  # mutmut redraws a progress line many times a second
        code = subprocess.run([str(mutmut), "run", "--max-children", str(children)], cwd=SCRATCH, stdout=log,
                              stderr=subprocess.STDOUT).returncode
    if code != 0:
        sys.exit(f"mutmut run failed ({code}); see {SCRATCH / 'run.log'}")


def report() -> dict:
    mutmut = Path(sys.executable).with_name("mutmut")
    listing = subprocess.run([str(mutmut), "results", "--all", "true"], cwd=SCRATCH, capture_output=True, text=True,
                             check=True).stdout
    statuses: dict[str, Counter] = {}
    survivors = []
    for line in re.sub(r"\x1b\[[0-9;]*m", "", listing).splitlines():
        if ":" not in line:
            continue
        name, status = (part.strip() for part in line.rsplit(":", 1))
        # "<module>.x_<function>__mutmut_<n>" or "<module>.xǁ<Class>ǁ<method>__mutmut_<n>"
        module = name.split(".x")[0]
        statuses.setdefault(module, Counter())[status] += 1
        if status == "survived":
            survivors.append(name)
    summary = {}
    for module, counts in sorted(statuses.items()):
        total = sum(counts.values())
        killed = counts["killed"] + counts["timeout"]
        summary[module] = {"mutants": total, "killed": killed, "score": round(killed / total, 3), **counts}
        print(f"{module}: {killed} of {total} mutants killed ({killed / total:.1%}); "
              + ", ".join(f"{status} {n}" for status, n in sorted(counts.items()) if status != "killed"))
    for name in survivors:
        shown = subprocess.run([str(mutmut), "show", name], cwd=SCRATCH, capture_output=True, text=True).stdout
        print(f"\nsurvived: {name}\n" + "\n".join(line for line in shown.splitlines() if line.startswith(("+", "-"))
                                                   and not line.startswith(("+++", "---"))))
    (SCRATCH / "score.json").write_text(json.dumps(summary, indent=2))
    return summary


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--report", action="store_true", help="only report the last run's results")
    parser.add_argument("--max_children", type=int, default=os.cpu_count() or 2, help="mutants tested at once")
    parser.add_argument("--fresh", action="store_true", help="forget earlier results (delete the scratch folder)")
    args = parser.parse_args(argv)
    if args.fresh and SCRATCH.exists():
        shutil.rmtree(SCRATCH)
    prepare()
    if not args.report:
        run(args.max_children)
    report()


if __name__ == "__main__":
    main()
