"""The Streamlit app (top layer): Search for shoppers, Catalog for catalog managers, Quality for merchandisers.

Run it with `streamlit run app/main.py`; see app/settings.py for where the catalog and model come from.
"""
