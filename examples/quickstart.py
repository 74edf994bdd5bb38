"""Quickstart: differentiate example Tesseracts loaded in-process.

1. ``rosenbrock`` ships analytic gradient endpoints: finite differences from
   ``tess_ad.with_finite_differences`` agree with them.
2. ``nested`` ships only ``apply``: ``with_finite_differences`` gives it
   gradient endpoints, with one sweep of 2n apply calls for every output.

Run: ``python examples/quickstart.py``
"""

import json
from pathlib import Path

import numpy as np
from tesseract_core import Tesseract

import tess_ad

HERE = Path(__file__).parent


def load(name: str):
    tesseract = Tesseract.from_tesseract_api(str(HERE / name / "tesseract_api.py"))
    inputs = json.loads((HERE / name / "example_inputs.json").read_text())["inputs"]
    return tesseract, inputs


def main() -> None:
    rosen, inputs = load("rosenbrock")
    exact = rosen.vector_jacobian_product(inputs, ["x"], ["loss"], {"loss": 1.0})["x"]
    fd = tess_ad.with_finite_differences(rosen)
    approx = fd.vector_jacobian_product(inputs, ["x"], ["loss"], {"loss": 1.0})["x"]
    print("rosenbrock: d loss / dx")
    print(f"  analytic endpoint   {np.array2string(exact, precision=6)}")
    print(f"  finite differences  {np.array2string(approx, precision=6)}")
    print(f"  max relative error  {np.max(np.abs(approx - exact) / np.abs(exact)):.1e}")

    nested, inputs = load("nested")
    print(f"\nnested: endpoints of the Tesseract itself: {nested.available_endpoints}")
    schema = tess_ad.tesseract_schema(nested)
    paths = list(schema.inputs.flatten(inputs).differentiable_paths)
    fd = tess_ad.with_finite_differences(nested)
    grads = fd.vector_jacobian_product(
        inputs, paths, ["summary.{sumsq}"], {"summary.{sumsq}": 1.0}
    )
    print("nested: d summary.{sumsq} / d input, by central differences")
    for path, grad in grads.items():
        print(f"  {path:<22} {np.array2string(np.ravel(grad), precision=5)}")


if __name__ == "__main__":
    main()
