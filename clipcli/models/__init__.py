"""Which model: names, weights tags and checkpoint files, devices; nothing is loaded here."""
