"""PyTorch adapter: make a Tesseract call a differentiable ``torch.autograd.Function``."""

__all__: list[str] = []
