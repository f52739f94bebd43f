"""Learning fine-grained product embeddings from category labels (CoIns / CoInsP and baselines)."""
