"""A process that uses a model space while others do: `python -m tests.space_worker ROLE SPACE N ID`.

ROLE `add` stores N models through the API; `read` lists the space, reads every listed model's
maps (checksum-verified) and computes a distance matrix, N times; `cli-add`/`cli-list`/
`cli-distance` do the same through the command line. Prints one JSON line: what worked and every
error message (an error must be an OnnxAttrError: anything else is a failure of the test).
"""

from __future__ import annotations

import json
import sys
import traceback

import numpy as np

from onnxattr.errors import OnnxAttrError
from onnxattr.space import ModelSpace


def main(role: str, space: str, n: int, ident: str) -> dict:
    done, errors, crashes = 0, [], []
    rng = np.random.default_rng(abs(hash(ident)) % 2**32)
    s = ModelSpace(space)
    for i in range(n):
        try:
            if role == "add":
                n_img, size = s.read_probe().images.shape[:2]
                maps = {"saliency": rng.normal(size=(n_img, size, size))}
                s.add_model(f"{ident}_{i}", maps, rng.normal(size=(n_img, 8)), {"task": ident})
            elif role == "read":
                from onnxattr.analysis.distances import pairwise_matrix
                from onnxattr.analysis.estimators import MapCosine

                names = [m.name for m in s.models()]
                for name in names:
                    s.read_maps(name, "saliency")
                if len(names) >= 2:
                    pairwise_matrix(space, MapCosine("saliency"), memory_bytes=1 << 20)
            done += 1
        except OnnxAttrError as exc:
            errors.append(str(exc))
        except Exception:
            crashes.append(traceback.format_exc())
    return {"role": role, "id": ident, "done": done, "errors": errors, "crashes": crashes}


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4])))
