"""The mini-Taskonomy worlds behind the zoo's mix of input conventions: does a ranking survive a
change of preprocessing that leaves every model's function of the pixels as it is? (issue 17)

    python benchmarks/interface_worlds.py --worlds 1 2 3 --out benchmarks/results/interface_worlds

Every committed encoder of a world is given a new input interface drawn (seeded by the world and
the model's name, fixed before any score) from the conventions the zoo's models use: RGB or BGR,
pixels /255, /127.5 − 1, raw 0-255, ImageNet or Caffe mean/std. A preamble of Mul/Add (and a
Gather for BGR) in front of the ONNX graph turns that input back into the one the encoder was
trained on, so the re-interfaced model computes the same function of the probe pixels and its
measured transfers are the world's own. Each world is built four times (as committed / re-
interfaced × grad_input and elrp measured from the model's own zero / from mid-gray) and every
estimator below is scored on the world's heterogeneous oracle: P@3, Spearman, twin first. An
estimator that reads the models, not their input conventions, scores the same on both interfaces.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parent))
import select_worlds as SW  # noqa: E402

from onnxattr.analysis.selection import DEFAULT_ESTIMATOR, twin_check  # noqa: E402
from onnxattr.benchmark.spaces import probe_set  # noqa: E402
from onnxattr.benchmark.world import Config, committed_dir  # noqa: E402
from onnxattr.pipeline import add_model  # noqa: E402
from onnxattr.preprocess import PRESETS, Preprocessing  # noqa: E402
from onnxattr.space import ModelSpace  # noqa: E402

#: The input conventions drawn from (as the zoo's models have them: model_zoo/*.py).
INTERFACES: dict[str, dict] = {
    "unit": {**PRESETS["unit"]},
    "raw255": {**PRESETS["raw255"]},
    "minus1to1": {**PRESETS["minus1to1"]},
    "imagenet": {**PRESETS["imagenet"]},
    "caffe (bgr)": {**PRESETS["caffe"]},
    "unit (bgr)": {**PRESETS["unit"], "color": "bgr"},
    "imagenet (bgr)": {**PRESETS["imagenet"], "color": "bgr"},
}
ESTIMATORS = [
    DEFAULT_ESTIMATOR, "combine:saliency=0.6,svcca+hub=0.4", "combine:elrp+g16+csls3=0.3,svcca+hub=0.7",
    "elrp+abs+g16+rank+hub", "saliency+abs+g16+hub",
    "elrp+abs+g16+hub", "elrp+g16+csls3", "grad_input+g16+csls3", "elrp", "grad_input",
    "saliency", "svcca+hub", "cka",
]
REFERENCES = ("model", "gray")


def draw_interface(world: int, name: str) -> str:
    """The interface of model `name` in world `world`: a hash, so no choice can follow a score."""
    h = int(hashlib.sha256(f"interface/{world}/{name}".encode()).hexdigest(), 16)
    return list(INTERFACES)[h % len(INTERFACES)]


def _vec(values: list[float], channels: int, axis: int) -> np.ndarray:
    v = np.broadcast_to(np.asarray(values, np.float32), (channels,)).copy()
    shape = [1, 1, 1, 1]
    shape[axis] = channels
    return v.reshape(shape)


def reinterface(src: Path, dst: Path, old: Preprocessing, new: Preprocessing) -> None:
    """`src` with a preamble: input in `new`'s convention in, `old`'s convention to the graph.

    p = colour⁻¹((z·σ_new + μ_new) / s_new), x = (p·s_old − μ_old) / σ_old (per channel)."""
    model = onnx.load(str(src))
    g = model.graph
    (inp,) = [i for i in g.input if i.name not in {t.name for t in g.initializer}]
    axis, c = (1 if old.layout == "nchw" else 3), old.channels
    consts = {
        "pre_a": _vec(list(new.std), c, axis) / np.float32(new.scale),
        "pre_b": _vec(list(new.mean), c, axis) / np.float32(new.scale),
        "pre_c": np.float32(old.scale) / _vec(list(old.std), c, axis),
        "pre_d": -_vec(list(old.mean), c, axis) / _vec(list(old.std), c, axis),
    }
    nodes = [helper.make_node("Mul", ["pixels", "pre_a"], ["pre_u0"]),
             helper.make_node("Add", ["pre_u0", "pre_b"], ["pre_u1"])]
    last = "pre_u1"
    if new.color != old.color:  # BGR <-> RGB
        consts["pre_flip"] = np.array([2, 1, 0], np.int64)
        nodes.append(helper.make_node("Gather", ["pre_u1", "pre_flip"], ["pre_u2"], axis=axis))
        last = "pre_u2"
    nodes += [helper.make_node("Mul", [last, "pre_c"], ["pre_u3"]),
              helper.make_node("Add", ["pre_u3", "pre_d"], [inp.name])]
    g.initializer.extend(numpy_helper.from_array(v, k) for k, v in consts.items())
    new_input = onnx.ValueInfoProto()
    new_input.CopyFrom(inp)
    new_input.name = "pixels"
    g.input.remove(inp)
    g.input.insert(0, new_input)
    for k, node in enumerate(nodes):
        g.node.insert(k, node)
    onnx.checker.check_model(model)
    onnx.save(model, str(dst))


def build(world: int, out: Path, interfaced: bool, reference: str) -> Path:
    """World `world`'s space, every encoder as committed or re-interfaced, maps from `reference`."""
    src = committed_dir(world)
    manifest = json.loads((src / "manifest.json").read_text())
    cfg = Config(world=world)
    folder = out / f"w{world}-{'interfaced' if interfaced else 'committed'}-{reference}"
    folder.mkdir(parents=True, exist_ok=True)
    for oracle in ("oracle_full.csv", "oracle.csv"):
        (folder / oracle).write_bytes((src / oracle).read_bytes())
    space = folder / "space.h5"
    if space.exists():
        return folder
    ModelSpace(space).write_probe(probe_set(cfg))
    for e in manifest["models"]:
        spec = dict(e["preprocessing"])
        old = Preprocessing.from_dict({**PRESETS[spec.pop("preset")], **spec})
        path, pre = src / e["file"], old
        if interfaced:
            pre = Preprocessing.from_dict({**old.to_dict(), **INTERFACES[draw_interface(world, e["name"])],
                                           "preset": None})
            path = folder / f"{e['name']}.onnx"
            reinterface(src / e["file"], path, old, pre)
        add_model(space, path, encoder_node=e["encoder_node"], name=e["name"], preprocessing=pre,
                  methods=["saliency", "grad_input", "elrp"], batch_size=32, progress=False,
                  method_params={m: {"reference": reference} for m in ("grad_input", "elrp")},
                  metadata={"framework": e["framework"], "task": e["task"]})
    return folder


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--worlds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--work", type=Path, default=Path("bench/interface_worlds"))
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/interface_worlds"))
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    rows: dict[str, dict[str, dict[str, dict]]] = {}  # estimator -> variant -> world -> scores
    drawn = {}
    for w in args.worlds:
        names = [e["name"] for e in json.loads((committed_dir(w) / "manifest.json").read_text())["models"]]
        drawn[w] = {n: draw_interface(w, n) for n in names}
        for interfaced in (False, True):
            for ref in REFERENCES:
                variant = f"{'re-interfaced' if interfaced else 'as committed'}, reference {ref}"
                world = SW.World(w, build(w, args.work, interfaced, ref), 5)
                for est in ESTIMATORS:
                    world.add(est)
                    sc = world.scores[est]["oracle_full"]
                    first, cases = twin_check(world.mats[est], world.tasks, world.kinds)["all"]
                    rows.setdefault(est, {}).setdefault(variant, {})[f"world {w}"] = {
                        "P@3": float(np.nanmean(sc["P@3"])),
                        "spearman": float(np.nanmean(sc["spearman"])),
                        "twins": [first, cases],
                    }
                print(f"world {w}, {variant}: done ({time.perf_counter() - t0:.0f} s)", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(
        {"interfaces": INTERFACES, "drawn": drawn, "scores": rows}, indent=1))
    args.out.with_suffix(".md").write_text(markdown(rows, drawn))
    print(f"wrote {args.out.with_suffix('.md')} and .json ({time.perf_counter() - t0:.0f} s)")
    return 0


def markdown(rows: dict, drawn: dict) -> str:
    worlds = list(next(iter(next(iter(rows.values())).values())))
    lines = [
        "# Interface worlds: the benchmark's encoders behind the zoo's input conventions",
        "",
        "Generated by `benchmarks/interface_worlds.py`. Each cell: P@3 / Spearman / twins first "
        "on the world's heterogeneous oracle (`oracle_full.csv`). *As committed*: every encoder "
        "with its own preprocessing (ImageNet, Keras twins [-1, 1]); *re-interfaced*: the same "
        "functions of the pixels behind a drawn input convention. *reference*: what grad_input "
        "and elrp measure the input from (the model's own zero, or mid-gray pixels).",
        "",
        "| estimator | variant | " + " | ".join(worlds) + " |",
        "|---|---|" + "---|" * len(worlds),
    ]
    for est, variants in rows.items():
        for variant, per_world in variants.items():
            cells = [f"{s['P@3']:.3f} / {s['spearman']:.3f} / {s['twins'][0]}/{s['twins'][1]}"
                     for s in per_world.values()]
            lines.append(f"| `{est}` | {variant} | " + " | ".join(cells) + " |")
    lines += ["", "Drawn interfaces:", ""]
    for w, d in drawn.items():
        counts = {i: sum(v == i for v in d.values()) for i in INTERFACES}
        lines.append(f"- world {w}: " + ", ".join(f"{i} {c}" for i, c in counts.items() if c))
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
