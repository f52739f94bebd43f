"""A catalog from birth to change: its folder (layout, lock, versions, the commit, clean-up), catalog.json
(`CatalogInfo`), uploaded photos, which FAISS index and building it, the loaded read-only `Catalog` and
how it holds its vectors, and the writes: build, add, remove, rebuild, restore, edit."""
