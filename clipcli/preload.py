"""Importing what a run needs later on a thread of its own, while the run does other work.

faiss takes 40-80 ms to import, most of it in C, and a short run needs it only at its end,
after seconds of ONNX Runtime work that leaves the interpreter free.
"""

from __future__ import annotations

import contextlib
import importlib
import threading


def import_ahead(*modules: str) -> None:
    """Start importing `modules` in the background; a later import waits for it to finish.

    Python's import lock makes the later `import` of the same module wait, not import twice;
    an import that fails here is left for that later import to raise, with its own traceback.
    """

    def load() -> None:
        for module in modules:
            with contextlib.suppress(Exception):
                importlib.import_module(module)

    threading.Thread(target=load, name="clipcli-import-ahead", daemon=True).start()
