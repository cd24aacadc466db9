"""recstrata.training: CTR models with compressed embeddings (installed as recstrata.training)."""
