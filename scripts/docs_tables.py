"""Write the README's tables of registered repair solvers and budget measures from the registries
(between the `<!-- registry:NAME -->` markers); `--check` exits 1 when the README is out of date.

    python scripts/docs_tables.py [--check]
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def tables() -> dict[str, str]:
    from mtprune.measures import all_measures
    from mtprune.solvers import all_solvers

    solvers = ["| repair | what it fits |", "| --- | --- |"]
    solvers += [f"| `{s.name}` | {s.fits} |" for s in all_solvers().values()]
    measures = ["| budget | what one unit costs | depends on the length | measured here |", "| --- | --- | --- | --- |"]
    measures += [f"| `{m.name}:0.6` | {m.help} | {'yes' if m.per_length else 'no'} | {'yes' if m.measured else 'no'} |"
                 for m in all_measures().values()]
    return {"solvers": "\n".join(solvers), "measures": "\n".join(measures)}


def render(text: str) -> str:
    for name, table in tables().items():
        pattern = re.compile(rf"(<!-- registry:{name} -->\n)(?:.*?\n)?(<!-- /registry:{name} -->)", re.S)
        if not pattern.search(text):
            raise SystemExit(f"README.md has no <!-- registry:{name} --> markers")
        text = pattern.sub(lambda m: m.group(1) + table + "\n" + m.group(2), text)
    return text


def main(argv: list[str]) -> int:
    text = README.read_text()
    new = render(text)
    if "--check" in argv:
        if new != text:
            print("README.md's registry tables are out of date: run python scripts/docs_tables.py", file=sys.stderr)
            return 1
        return 0
    README.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
