"""What the tests make for themselves: seeded random models, small shops, generated photos.

Test modules import them by name (`from tests.support.photos import product_photo`); the fixtures
that hand out shops built once per run are in tests/conftest.py.
"""
