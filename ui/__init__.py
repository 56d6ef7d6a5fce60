"""Streamlit-only helpers for the dashboard pages (sign-in gate, idle timeout, caching, formatting)."""
