"""Small heads on embeddings: training, splits and metrics, head files, tile prediction."""
