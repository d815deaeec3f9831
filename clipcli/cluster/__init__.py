"""Embedding on a Ray cluster: actors that embed batches as clipcli.encoders.batching does."""
