"""Visual search: the Streamlit entry point.

    streamlit run streamlit_app.py [-- --catalog catalogs/fashion-mnist-test --model models/coinsp-fmnist.pt]

(streamlit_app.py, at the project's root, runs this script: served from here, Streamlit would take
the `pages` folder beside it for old-style pages in the first session after start-up.)

Pages: Search (shoppers), Catalog (catalog managers), Quality (merchandisers).
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `streamlit run app/main.py` only puts app/ on the path
    sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402

from app.components import catalog_stamp, settings  # noqa: E402
from app.settings import server_settings_problem  # noqa: E402

st.set_page_config(page_title="Visual search", page_icon=":material/image_search:", layout="wide")

# The app's own log lines (each search: app.search) on the server's output, once per process.
app_log = logging.getLogger("app")
if not app_log.handlers:
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    app_log.addHandler(handler)
    app_log.setLevel(logging.INFO)

PAGES = Path(__file__).parent / "pages"
navigation = st.navigation([
    st.Page(PAGES / "search.py", title="Search", icon=":material/image_search:", default=True),
    st.Page(PAGES / "catalog.py", title="Catalog", icon=":material/inventory_2:"),
    st.Page(PAGES / "quality.py", title="Quality", icon=":material/insights:"),
])

# Streamlit forgets a widget's value once a run does not draw it; re-storing the search options
# keeps them while the user visits the other pages (an uploaded file can't be kept this way).
SEARCH_OPTIONS = ("search_k", "search_category", "search_hide_duplicates", "search_dup_threshold", "search_why",
                  "search_min_score", "search_mode", "search_item", "search_group", "search_filter_columns",
                  "search_mirror", "search_browse_open")
for key in [*SEARCH_OPTIONS, *(k for k in st.session_state if str(k).startswith("search_filter_"))]:
    if key in st.session_state:
        st.session_state[key] = st.session_state[key]

# Started from another folder, Streamlit has not read .streamlit/config.toml: it would listen on
# every interface and take 200 MB uploads. Refuse to serve rather than serve that way.
problem = server_settings_problem(st.get_option)
if problem:
    st.error(problem, icon=":material/error:")
    st.stop()

cfg = settings()
with st.sidebar:
    ready = catalog_stamp(cfg.catalog) is not None
    st.caption(f"{':green[●]' if ready else ':red[●] no'} Catalog `{cfg.catalog.name}`  \nModel `{cfg.model.name}`")

navigation.run()
