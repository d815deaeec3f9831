"""Shards of embeddings in clip-retrieval's layout: img_emb/img_emb_N.npy and
metadata/metadata_N.parquet."""
