"""Putting files into folders: safe folder names, copies and moves that never overwrite and
never leave half a file under a real name, and a manifest of what went where."""
