"""Route modules: thin handlers that validate, call the scorer and map its frame to responses."""
