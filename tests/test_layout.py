"""The package's architecture, checked: imports point one way, so no module reaches itself.

The layers themselves are import-linter's contracts (pyproject.toml), run by `make test` and
`make lint`; a circle inside one layer is not a layer violation, so it is looked for here,
counting every import: at module level, inside functions, and under TYPE_CHECKING.
"""

from __future__ import annotations

import grimp


def test_no_module_of_clipcli_imports_itself_through_others():
    graph = grimp.build_graph("clipcli", cache_dir=None)

    circles = []
    for module in sorted(graph.modules):
        for imported in sorted(graph.find_modules_directly_imported_by(module)):
            back = graph.find_shortest_chain(importer=imported, imported=module)
            if back is not None:
                circles.append(" -> ".join([module, *back]))

    assert circles == []
