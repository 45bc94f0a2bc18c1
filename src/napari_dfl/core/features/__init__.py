"""Tile embeddings: the extraction engine and the resumable embedding store."""
