"""What is kept on disk: the SQLite catalog (the source of truth), the FAISS index derived
from it, the text-embedding cache, and the registry of index folders."""
