"""Zero-shot classification: prompt templates, label embeddings, and scoring."""
