"""Catalogs: the manifest and its importers (here), and by what happens to a catalog: catalog/ (its
folder, building and changing it, the loaded Catalog), search/, quality/ and scale/ (docs/architecture.md)."""
