"""The Streamlit app `pinpipe ui` serves: five pages in one navigation."""

import streamlit as st

from ingestion.ui import pages

st.set_page_config(page_title="pinpipe", layout="wide")
st.navigation(
    [
        st.Page(pages.insights, title="Insights", url_path="insights", default=True),
        st.Page(pages.explore, title="Explore", url_path="explore"),
        st.Page(pages.realtime, title="Real-time", url_path="realtime"),
        st.Page(pages.pipeline, title="Pipeline", url_path="pipeline"),
        st.Page(pages.sql, title="SQL", url_path="sql"),
    ]
).run()
