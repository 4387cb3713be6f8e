"""The README's option lists, generated from the schemas (so from the constructors).

The README marks each list with ``<!-- options: <schema name> -->`` ... ``<!-- /options -->``;
``render`` replaces what is between the markers with ``Schema.markdown()``. A test fails when
the README differs from its rendering; ``python -m expcache.app.docs README.md`` rewrites it.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from .schemas import all_schemas

__all__ = ["main", "render"]

_BLOCK = re.compile(r"(<!-- options: (\S+) -->\n)(.*?)(<!-- /options -->)", re.DOTALL)


def render(text: str) -> str:
    """``text`` with every marked option list regenerated; unknown schema names are an error."""
    schemas = {s.name: s for s in all_schemas()}

    def block(match: re.Match[str]) -> str:
        name = match.group(2)
        if name not in schemas:
            raise KeyError(f"README names an unknown schema {name!r}; known: {sorted(schemas)}")
        return f"{match.group(1)}{schemas[name].markdown()}\n{match.group(4)}"

    return _BLOCK.sub(block, text)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m expcache.app.docs README.md", file=sys.stderr)
        return 2
    path = Path(argv[0])
    text = path.read_text()
    new = render(text)
    if new != text:
        path.write_text(new)
        print(f"{path}: option lists regenerated")
    return 0


if __name__ == "__main__":
    import expcache.app  # noqa: F401  # registers schemas (as the CLI does)

    sys.exit(main(sys.argv[1:]))
