"""What the tests make for themselves and share: seeded random models (models), small shops (shops),
generated photos and zips (photos), HEIC files (heic_files), the hostile-input corpus (hostile_corpus),
an exact top-k comparison that holds whatever the order of ties (exact_ranking), and a Streamlit server
with a real browser (streamlit_server).

Test modules import them by name (`from tests.support.photos import product_photo`), never from
conftest; the fixtures that hand out shops built once per run are in tests/conftest.py.
"""
