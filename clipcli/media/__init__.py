"""The files users give: finding image files in folders, and decoding them robustly."""
