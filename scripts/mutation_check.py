"""Compare mutmut's surviving mutants with those docs/mutation.md argues equivalent.

Run after ``mutmut run`` (docs/mutation.md says how): prints every survivor the document does
not argue (tests to write, or an argument to add) and every argued mutant that no longer
survives (an argument to drop). Exits 1 when a survivor is not argued.

usage: .venv/bin/python scripts/mutation_check.py [docs/mutation.md]
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

HEADING = re.compile(r"^### (avokit/\S+)\.py: ")
NAME = re.compile(r"`(x\S*?__mutmut_\d+)`")


def argued(doc: Path) -> set[str]:
    """Full mutant names of the bullets under ``### avokit/<file>.py: <function>`` headings."""
    names: set[str] = set()
    module = None
    in_section = False
    for line in doc.read_text(encoding="utf-8").splitlines():
        if line.startswith("## "):
            in_section = line.startswith("## Survivors argued equivalent")
            continue
        heading = HEADING.match(line)
        if heading:
            module = heading.group(1).replace("/", ".")
        elif in_section and module and line.startswith("- "):
            head = line.split(": ", 1)[0]
            names.update(f"{module}.{n}" for n in NAME.findall(head))
    return names


def survivors() -> set[str]:
    """Survivors of the last ``mutmut run`` (``mutmut results``)."""
    out = subprocess.run([sys.executable, "-m", "mutmut", "results"], capture_output=True,
                         text=True, check=True).stdout
    return {line.strip().split(":")[0] for line in out.splitlines() if line.strip().endswith(": survived")}


def main() -> int:
    doc = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/mutation.md")
    said, alive = argued(doc), survivors()
    for name in sorted(alive - said):
        print(f"not argued: {name}")
    for name in sorted(said - alive):
        print(f"argued but no longer surviving: {name}")
    print(f"{len(alive)} survivors, {len(alive & said)} argued equivalent in {doc}")
    return 1 if alive - said else 0


if __name__ == "__main__":
    sys.exit(main())
