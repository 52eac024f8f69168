"""Evaluation of pretrained checkpoints: features, kNN (FAISS) and prototype plots."""
