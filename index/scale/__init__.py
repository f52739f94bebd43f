"""Large catalogs: Ray embedding into Parquet shards, on-disk IVF-PQ catalogs built from them, the
index served by Milvus (`--backend`), and export to Parquet and Qdrant."""
