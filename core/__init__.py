"""Framework-free core: schema, features, scoring, metrics. Never imports streamlit, pyspark or fastapi."""
