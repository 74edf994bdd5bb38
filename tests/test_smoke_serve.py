from helpers import example_inputs


def test_served_and_local_agree(local_tesseract, served_tesseract):
    inp = example_inputs("rosenbrock")
    a = local_tesseract("rosenbrock").apply(inp)
    b = served_tesseract("rosenbrock").apply(inp)
    assert float(a["loss"]) == float(b["loss"])
