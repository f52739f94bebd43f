"""Catalogs: the manifest format, importers that produce manifests, search indexes and evaluation."""
