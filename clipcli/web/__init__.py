"""The local search page: `clipcli serve`'s server (app.py) over a warm index (warm_search.py),
its query strings (params.py), uploads (uploads.py), JSON (responses.py), headers and Host
checks (security.py), and the page itself (static/)."""
