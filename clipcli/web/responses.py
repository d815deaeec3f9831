"""The server's JSON: every string made safe to encode (a file name that is not UTF-8 keeps
its odd bytes as escapes, as `clipcli search --json` writes them), errors as `{"error": ...}`."""

from __future__ import annotations

import json
from typing import Any

from starlette.responses import JSONResponse

from clipcli.literal import unicode_safe_data


class SafeJSONResponse(JSONResponse):
    """JSON whose strings are all valid Unicode, whatever the file names in it hold."""

    def render(self, content: Any) -> bytes:
        return json.dumps(
            unicode_safe_data(content), ensure_ascii=False, allow_nan=False, separators=(",", ":")
        ).encode("utf-8")


def error_response(status: int, message: str) -> SafeJSONResponse:
    return SafeJSONResponse({"error": message}, status_code=status)
