"""FastAPI scoring service: `create_app()` in `api.main`, started by `readmit api`."""
