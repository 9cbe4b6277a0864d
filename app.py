"""GEM curation studio: the Streamlit entry point (`streamlit run app.py`).

Pages are listed explicitly with st.navigation (the pages/ folder is not auto-discovered, so
pages/common.py, the shared state helpers, is never shown as a page). To add a page: create
pages/N_Name.py and add one st.Page line below.
"""
from pathlib import Path

import streamlit as st

from pages import common

# a file shipped in the repo: Streamlit serves it itself (a ":material/..:" icon makes the browser
# fetch the favicon from fonts.gstatic.com, outside this server)
FAVICON = Path(__file__).resolve().parent / "gem" / "assets" / "favicon.png"
st.set_page_config(page_title="GEM curation studio", page_icon=str(FAVICON), layout="wide")

PAGES = [
    st.Page("pages/1_Home.py", title="Home", icon=":material/home:", default=True),
    st.Page("pages/2_Clusters.py", title="Clusters", icon=":material/bubble_chart:"),
    st.Page("pages/3_Taxonomy.py", title="Taxonomy", icon=":material/account_tree:"),
    st.Page("pages/4_Mixture.py", title="Mixture", icon=":material/tune:"),
    st.Page("pages/5_Student.py", title="Student", icon=":material/school:"),
    st.Page("pages/6_Mixture_lab.py", title="Mixture lab", icon=":material/science:"),
    st.Page("pages/7_Documents.py", title="Documents", icon=":material/search:"),
]

common.preload_engine()  # the first fit should not wait for torch and scikit-learn to import
page = st.navigation(PAGES)
common.sidebar()
page.run()
