"""JAX adapter: make a Tesseract call differentiable under every JAX transformation."""

__all__: list[str] = []
