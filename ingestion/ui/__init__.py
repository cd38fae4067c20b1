"""The web UI (Streamlit): the insights as charts, the real-time metrics, the pipeline's health, read-only SQL."""
