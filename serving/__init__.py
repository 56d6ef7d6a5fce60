"""The serving layer: scoring service, operational database, audit, per-page queries, figures.

Sits above `models/` and `core/`; never imports streamlit, fastapi or pyspark.
"""
