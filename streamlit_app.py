"""Visual search app, as served: `streamlit run streamlit_app.py` (./run.sh does).

Served from here, not from app/main.py, because Streamlit treats a folder named `pages` beside
the main script as old-style pages until the script's own st.navigation has run once: the first
session after start-up would run app/pages/catalog.py on its own for a first URL of /catalog
(without the path set-up and checks of app/main.py) and list "main, catalog, quality, search".
Beside this file there is no `pages` folder, the project root is on the path, and every URL is
answered by app/main.py's navigation.
"""
from pathlib import Path

MAIN = Path(__file__).resolve().parent / "app" / "main.py"
# Run in a namespace of its own each time (as Streamlit runs a script): no module is swapped in
# sys.modules, so sessions running at once do not disturb each other.
exec(compile(MAIN.read_text(), str(MAIN), "exec"), {"__file__": str(MAIN), "__name__": "app_main"})
