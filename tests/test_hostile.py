"""Hostile input, per command: bad models, probe folders, spaces, CSVs, names and arguments.

Every case runs the real command line and asserts: a non-zero exit, exactly one `error:` line (or
click's usage error, exit 2, for a malformed option), no traceback, and the space byte-identical.
Cases marked `ok` are hostile-looking input that must be *accepted* (a BOM, odd file names...).
With ``HOSTILE_TABLE=path.json`` the per-category counts are written for the closing note.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper
from PIL import Image
from typer.testing import CliRunner

from onnxattr.analysis.distances import read_labelled_csv
from onnxattr.cli import app
from onnxattr.errors import OnnxAttrError
from onnxattr.integrity import check_space
from onnxattr.segments import segment_dir
from onnxattr.space import ModelSpace

from .conftest import random_probe
from .models import TinyVGG, export
from .onnx_builders import init, make_model

RESULTS: Counter = Counter()


@dataclass
class Ctx:
    """Shared inputs: a good space (copied per case), a good model, photos, a work folder."""

    root: Path
    space: Path
    model: Path
    photos: Path

    def file(self, name: str, data: bytes | str) -> Path:
        p = self.root / name
        p.write_bytes(data.encode() if isinstance(data, str) else data)
        return p


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Ctx:
    root = tmp_path_factory.mktemp("hostile")
    space = root / "good.h5"
    s = ModelSpace(space)
    s.write_probe(random_probe(n=4, size=16))
    rng = np.random.default_rng(0)
    for name in ("a", "b", "c"):
        s.add_model(name, {"saliency": rng.normal(size=(4, 16, 16))}, rng.normal(size=(4, 6)), {})
    photos = root / "photos"
    photos.mkdir()
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(photos / f"{i}.png")
    model = export(TinyVGG(), root / "vgg.onnx", (1, 3, 16, 16))
    yield Ctx(root, space, model, photos)
    table = os.environ.get("HOSTILE_TABLE")
    if table:
        Path(table).write_text(json.dumps({"|".join(k): v for k, v in RESULTS.items()}))


@pytest.fixture
def ctx(base, tmp_path) -> Ctx:
    space = tmp_path / base.space.name
    copy_space(base.space, space)
    return Ctx(tmp_path, space, base.model, base.photos)


def copy_space(src: Path, dst: Path) -> None:
    """A space is its index file and its folder of segments, named after it."""
    shutil.copy(src, dst)
    shutil.copytree(segment_dir(src), segment_dir(dst))


def segment_of(space: Path, model: str) -> Path:
    with h5py.File(space, "r") as f:
        return Path(f[f"models/{model}"].file.filename)


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else ""


def _edit(space: Path, fn: Callable[[h5py.File], None]) -> Path:
    with h5py.File(space, "r+") as f:
        fn(f)
    return space


# --------------------------------------------------------------------------- bad models
def _onnx(ctx: Ctx, name: str, model: onnx.ModelProto) -> Path:
    p = ctx.root / name
    onnx.save(model, str(p))
    return p


def _no_outputs(ctx):
    m = make_model([helper.make_node("Relu", ["x"], ["y"])], [("x", [1, 3, 8, 8])], [])
    return _onnx(ctx, "noout.onnx", m)


def _int_output(ctx):
    m = make_model(
        [helper.make_node("Cast", ["x"], ["y"], to=TensorProto.INT64)], [("x", [1, 3, 8, 8])], ["y"]
    )
    m.graph.output[0].type.tensor_type.elem_type = TensorProto.INT64
    return _onnx(ctx, "int.onnx", m)


def _no_inputs(ctx):
    m = make_model(
        [helper.make_node("Identity", ["w"], ["y"])],
        [],
        ["y"],
        [init("w", np.ones((1, 3, 4, 4), np.float32))],
    )
    return _onnx(ctx, "noin.onnx", m)


def _rank2(ctx):
    m = make_model([helper.make_node("Relu", ["x"], ["y"])], [("x", [1, 10])], ["y"])
    return _onnx(ctx, "rank2.onnx", m)


def _external_outside(ctx):
    m = make_model(
        [helper.make_node("Add", ["x", "w"], ["y"])],
        [("x", [1, 3, 8, 8])],
        ["y"],
        [init("w", np.ones((1, 3, 8, 8), np.float32))],
    )
    t = m.graph.initializer[0]
    t.ClearField("raw_data")
    t.data_location = TensorProto.EXTERNAL
    t.external_data.add(key="location", value="../../../etc/passwd")
    return _onnx(ctx, "ext.onnx", m)


def _truncated(ctx):
    data = ctx.model.read_bytes()
    return ctx.file("trunc.onnx", data[: len(data) // 2])


def _add(model: Callable[[Ctx], Path], *extra: str) -> Callable[[Ctx], list]:
    return lambda c: ["add", model(c), "--space", c.space, *extra]


MODELS = {
    "zero-byte": lambda c: c.file("zero.onnx", b""),
    "text": lambda c: c.file("text.onnx", "not a model"),
    "truncated": _truncated,
    "no outputs": _no_outputs,
    "integer output": _int_output,
    "no inputs": _no_inputs,
    "rank-2 input": _rank2,
    "external data outside": _external_outside,
    "folder": lambda c: c.root,
    "missing": lambda c: c.root / "missing.onnx",
}
CASES: list[tuple[str, str, Callable[[Ctx], list], str]] = []
for _id, _m in MODELS.items():
    CASES.append(("models", f"add {_id}", _add(_m), "fail"))
    # `nodes` lists what a readable model holds, even one `add` cannot use
    CASES.append(
        (
            "models",
            f"nodes {_id}",
            lambda c, _m=_m: ["nodes", _m(c)],
            "any"
            if _id in ("no outputs", "integer output", "no inputs", "rank-2 input")
            else "fail",
        )
    )
CASES += [
    (
        "models",
        "add unknown encoder node",
        _add(lambda c: c.model, "--encoder-node", "nope"),
        "fail",
    ),
    (
        "models",
        "add encoder node = input",
        _add(lambda c: c.model, "--encoder-node", "input"),
        "fail",
    ),
]


# --------------------------------------------------------------------------- bad spaces
def _truncated_space(c: Ctx) -> Path:
    data = c.space.read_bytes()
    return c.file("trunc.h5", data[: len(data) // 3])


def stored_bytes(path: Path, dataset: str) -> list[tuple[int, int]]:
    """(file offset, size) of each stored chunk of a dataset (or its one contiguous block)."""
    with h5py.File(path, "r") as f:
        dsid = f[dataset].id
        if f[dataset].chunks is None:
            return [(dsid.get_offset(), dsid.get_storage_size())]
        return [
            (i.byte_offset, i.size) for i in map(dsid.get_chunk_info, range(dsid.get_num_chunks()))
        ]


def _flip(c: Ctx) -> Path:
    segment = segment_of(c.space, "b")
    offset, size = stored_bytes(segment, "model/maps/saliency")[-1]
    raw = bytearray(segment.read_bytes())
    raw[offset + min(100, size // 2)] ^= 0xFF
    segment.write_bytes(bytes(raw))
    return c.space


def _nan_features(f: h5py.File) -> None:  # hand-edited, checksum recomputed to match
    from onnxattr.space import dataset_checksum

    ds = f["models/b/features"]
    ds[0, 0] = np.nan
    ds.attrs["sha256"] = dataset_checksum(ds)


SPACES: dict[str, Callable[[Ctx], Path]] = {
    "missing": lambda c: c.root / "nope.h5",
    "folder": lambda c: c.root,
    "zero-byte": lambda c: c.file("zero.h5", b""),
    "text": lambda c: c.file("text.h5", "hello"),
    "truncated": _truncated_space,
    "foreign HDF5": lambda c: _edit(c.space, lambda f: f.attrs.__delitem__("format")),
    "format version 99": lambda c: _edit(
        c.space, lambda f: f.attrs.__setitem__("format_version", 99)
    ),
    "format version 'abc'": lambda c: _edit(
        c.space, lambda f: f.attrs.__setitem__("format_version", "abc")
    ),
    "no probe": lambda c: _edit(c.space, lambda f: f.__delitem__("probe")),
    "models is a dataset": lambda c: _edit(
        c.space, lambda f: (f.__delitem__("models"), f.create_dataset("models", data=[1, 2]))
    ),
    "a dataset under models": lambda c: _edit(
        c.space, lambda f: f["models"].create_dataset("stray", data=[1, 2])
    ),
    "model without maps": lambda c: _edit(c.space, lambda f: f.__delitem__("models/b/maps")),
    "map of wrong rank": lambda c: _edit(
        c.space,
        lambda f: (
            f.__delitem__("models/b/maps/saliency"),
            f.create_dataset("models/b/maps/saliency", data=np.ones(5)),
        ),
    ),
    "missing uid": lambda c: _edit(c.space, lambda f: f["models/b"].attrs.__delitem__("uid")),
    "flipped bytes in a map": _flip,
    "NaN features (hand-edited)": lambda c: _edit(c.space, _nan_features),
}
# Which commands must refuse each space (others may succeed where they do not read the damage).
STRUCTURE = {
    "missing",
    "folder",
    "zero-byte",
    "text",
    "truncated",
    "foreign HDF5",
    "format version 99",
    "format version 'abc'",
    "models is a dataset",
    "a dataset under models",
}
READ_DAMAGE = {"no probe", "map of wrong rank", "missing uid", "flipped bytes in a map"}
MUST_FAIL = {  # the others may succeed where the command does not touch the damage
    "distance": STRUCTURE | READ_DAMAGE,
    "rank": STRUCTURE | READ_DAMAGE,
    "check": set(SPACES),
    "list": STRUCTURE,
    "remove": STRUCTURE,
    "add": STRUCTURE - {"missing"} | {"no probe"},
}
SPACE_ARGS = {
    "list": lambda s: ["list", "-s", s],
    "distance": lambda s: ["distance", "-s", s, "-m", "saliency", "-o", Path(s).parent / "out"],
    "rank": lambda s: ["rank", "a", "-s", s, "-m", "saliency"],
    "check": lambda s: ["check", s],
    "remove": lambda s: ["remove", "a", "-s", s],
    "add": lambda s: ["add", "MODEL", "-s", s],
}
for _id, _make in SPACES.items():
    for _cmd, _args in SPACE_ARGS.items():
        if (_cmd, _id) == ("add", "missing"):
            continue  # a new space: not hostile, and it attributes the whole embedded probe
        CASES.append(
            (
                "spaces",
                f"{_cmd} on {_id}",
                lambda c, _make=_make, _args=_args: [
                    c.model if a == "MODEL" else a for a in _args(_make(c))
                ],
                "fail" if _id in MUST_FAIL[_cmd] else "any",
            )
        )


# --------------------------------------------------------------------------- probe folders
def _folder(c: Ctx, files: dict[str, bytes]) -> Path:
    d = c.root / "probe_in"
    d.mkdir()
    for n, data in files.items():
        (d / n).write_bytes(data)
    return d


def _non_utf8(c: Ctx) -> Path:
    d = c.root / "probe_in"
    d.mkdir()
    Image.new("RGB", (9, 9), (1, 2, 3)).save(os.path.join(bytes(d), b"\xff\xfe.png"))
    Image.fromarray(np.full((9, 9), 60000, np.uint16)).save(d / "gray16.png")
    Image.new("CMYK", (9, 9), (0, 0, 0, 0)).save(d / "cmyk.jpg")
    Image.new("RGBA", (9, 9), (0, 0, 0, 0)).save(d / "alpha.png")
    return d


def _probe(folder: Callable[[Ctx], Path], *extra) -> Callable[[Ctx], list]:
    return lambda c: ["probe", "build", folder(c), "--space", c.root / "new.h5", *extra]


CASES += [
    ("probe folders", "empty folder", _probe(lambda c: _folder(c, {})), "fail"),
    (
        "probe folders",
        "only corrupt images",
        _probe(lambda c: _folder(c, {"a.png": b"\x89PNG garbage", "b.jpg": b"\xff\xd8\xff"})),
        "fail",
    ),
    ("probe folders", "only non-images", _probe(lambda c: _folder(c, {"a.txt": b"x"})), "fail"),
    ("probe folders", "a file, not a folder", _probe(lambda c: c.model), "fail"),
    ("probe folders", "missing folder", _probe(lambda c: c.root / "nope"), "fail"),
    ("probe folders", "--size 0", _probe(lambda c: c.photos, "--size", 0), "fail"),
    ("probe folders", "--size -5", _probe(lambda c: c.photos, "--size", -5), "fail"),
    ("probe folders", "--n 0", _probe(lambda c: c.photos, "--n", 0), "fail"),
    ("probe folders", "--n -3", _probe(lambda c: c.photos, "--n", -3), "fail"),
    ("probe folders", "--size abc", _probe(lambda c: c.photos, "--size", "abc"), "usage"),
    (
        "probe folders",
        "space in a missing folder",
        lambda c: ["probe", "build", c.photos, "--space", c.root / "no" / "s.h5"],
        "fail",
    ),
    (
        "probe folders",
        "replace under models",
        lambda c: ["probe", "build", c.photos, "--space", c.space, "--replace"],
        "fail",
    ),
    ("probe folders", "non-UTF-8 name, 16-bit, CMYK, alpha", _probe(_non_utf8), "ok"),
]

# --------------------------------------------------------------------------- CSVs
HEAD = "model,a,b,c\n"
GOOD = HEAD + "a,1,0.5,0.2\nb,0.5,1,0.3\nc,0.2,0.3,1\n"
CSVS = {
    "Latin-1": ("model,caf\xe9,b,c\n" + GOOD.split("\n", 1)[1]).encode("latin-1"),
    "empty": b"",
    "header only": HEAD.encode(),
    "ragged row": (HEAD + "a,1,2\n").encode(),
    "non-numeric cell": (HEAD + "a,1,x,2\nb,1,2,3\nc,1,2,3\n").encode(),
    "duplicate rows": (HEAD + "a,1,2,3\na,1,2,3\nc,1,2,3\n").encode(),
    "duplicate columns": b"model,a,a,c\na,1,2,3\nb,1,2,3\nc,1,2,3\n",
    "binary garbage": bytes(range(256)) * 4,
    "NaN affinities": (HEAD + "a,1,,0.2\nb,nan,1,0.3\nc,0.2,0.3,1\n").encode(),
}


def _csv(name: str, data: bytes) -> Callable[[Ctx], Path]:
    return lambda c: c.file(f"{name.replace(' ', '_')}.csv", data)


for _id, _data in CSVS.items():
    CASES.append(
        (
            "CSVs",
            f"evaluate --oracle {_id}",
            lambda c, _d=_data, _i=_id: [
                "evaluate",
                "--oracle",
                _csv(_i, _d)(c),
                "--affinity",
                c.file("good.csv", GOOD),
            ],
            "any" if _id == "NaN affinities" else "fail",
        )
    )  # empty oracle cells = not measured
    CASES.append(
        (
            "CSVs",
            f"rank --affinity {_id}",
            lambda c, _d=_data, _i=_id: ["rank", "a", "--affinity", _csv(_i, _d)(c)],
            "any" if _id == "NaN affinities" else "fail",
        )
    )
CASES += [
    (
        "CSVs",
        "evaluate with NaN affinity",
        lambda c: [
            "evaluate",
            "--oracle",
            c.file("o.csv", GOOD),
            "--affinity",
            _csv("nan", CSVS["NaN affinities"])(c),
        ],
        "fail",
    ),
    (
        "CSVs",
        "oracle is a folder",
        lambda c: ["evaluate", "--oracle", c.root, "--affinity", c.file("g.csv", GOOD)],
        "fail",
    ),
    (
        "CSVs",
        "UTF-8 with BOM",
        lambda c: ["rank", "a", "--affinity", c.file("bom.csv", "\ufeff" + GOOD)],
        "ok",
    ),
]

# --------------------------------------------------------------------------- names
NAMES = [
    "",
    "/",
    ".",
    "..",
    "a/maps",
    "a/maps/saliency",
    "a/features",
    "/models/a",
    "models",
    "probe",
    ".pending-a",
    "nope",
    "a b",
    "ä",
    "a\nb",
    "-",
    "*",
]
for _n in NAMES:
    CASES.append(
        (
            "names",
            f"remove {_n!r}",
            lambda c, _n=_n: ["remove", "--space", c.space, "--", _n],
            "fail",
        )
    )
for _n in ["", "../x", "a/maps", ".hidden", "a b"]:
    CASES.append(
        (
            "names",
            f"add --name {_n!r}",
            lambda c, _n=_n: ["add", c.model, "--space", c.space, "--name", _n],
            "fail",
        )
    )

# --------------------------------------------------------------------------- arguments
CASES += [
    (
        "arguments",
        f"add {' '.join(map(str, a))}",
        lambda c, a=a: ["add", c.model, "--space", c.space, "--name", "n", *a],
        k,
    )
    for a, k in [
        (("--device", "bogus"), "fail"),
        (("--device", "cuda:99"), "fail"),
        (("--batch-size", 0), "fail"),
        (("--batch-size", -1), "fail"),
        (("--methods", "nope"), "fail"),
        (("--methods", ","), "fail"),
        (("--input-size", "abc"), "fail"),
        (("--input-size", "0x0"), "fail"),
        (("--mean", "1,2"), "fail"),
        (("--std", "0,0,0"), "fail"),
        (("--preset", "nope"), "fail"),
        (("--layout", "xyz"), "fail"),
        (("--color", "purple"), "fail"),
        (("--rtol", "nan"), "fail"),
        (("--epsilon", "-1"), "fail"),
        (("--lrp-rules", "/nope.toml", "--methods", "lrp"), "fail"),
        (("--preprocessing", "/nope.json"), "fail"),
    ]
]
CASES += [
    (
        "arguments",
        "add --preprocessing garbage JSON",
        lambda c: [
            "add",
            c.model,
            "--space",
            c.space,
            "--preprocessing",
            c.file("p.json", "{nope"),
        ],
        "fail",
    ),
    (
        "arguments",
        "add --save-preprocessing into missing folder",
        lambda c: [
            "add",
            c.model,
            "--space",
            c.space,
            "--name",
            "n",
            "--save-preprocessing",
            c.root / "no" / "p.json",
        ],
        "fail",
    ),
    (
        "arguments",
        "add --save-preprocessing a folder",
        lambda c: [
            "add",
            c.model,
            "--space",
            c.space,
            "--name",
            "n",
            "--save-preprocessing",
            c.root,
        ],
        "fail",
    ),
    (
        "arguments",
        "distance -o an existing file",
        lambda c: ["distance", "-s", c.space, "-m", "saliency", "-o", c.file("f.txt", "x")],
        "fail",
    ),
    (
        "arguments",
        "distance -f xml",
        lambda c: ["distance", "-s", c.space, "-m", "saliency", "-o", c.root / "o", "-f", "xml"],
        "fail",
    ),
    (
        "arguments",
        "distance --memory-mb 0",
        lambda c: [
            "distance",
            "-s",
            c.space,
            "-m",
            "saliency",
            "-o",
            c.root / "o",
            "--memory-mb",
            0,
        ],
        "usage",
    ),
    ("arguments", "distance -m nope", lambda c: ["distance", "-s", c.space, "-m", "nope"], "fail"),
    (
        "arguments",
        "distance --models a,zzz",
        lambda c: ["distance", "-s", c.space, "-m", "saliency", "--models", "a,zzz"],
        "fail",
    ),
    (
        "arguments",
        "evaluate --plot x.xyz",
        lambda c: [
            "evaluate",
            "--oracle",
            c.file("o.csv", GOOD),
            "--affinity",
            c.file("a.csv", GOOD),
            "--plot",
            c.root / "x.xyz",
        ],
        "fail",
    ),
    (
        "arguments",
        "evaluate --top 0",
        lambda c: [
            "evaluate",
            "--oracle",
            c.file("o.csv", GOOD),
            "--affinity",
            c.file("a.csv", GOOD),
            "--top",
            0,
        ],
        "fail",
    ),
    (
        "arguments",
        "evaluate --map bad",
        lambda c: [
            "evaluate",
            "--oracle",
            c.file("o.csv", GOOD),
            "--affinity",
            c.file("a.csv", GOOD),
            "--map",
            "nope",
        ],
        "fail",
    ),
    (
        "arguments",
        "evaluate --map-file garbage",
        lambda c: [
            "evaluate",
            "--oracle",
            c.file("o.csv", GOOD),
            "--affinity",
            c.file("a.csv", GOOD),
            "--map-file",
            c.file("m.json", "[1"),
        ],
        "fail",
    ),
    (
        "arguments",
        "tree -o x.bogus",
        lambda c: ["tree", "-s", c.space, "-m", "saliency", "-o", c.root / "x.bogus"],
        "fail",
    ),
    (
        "arguments",
        "tree --linkage nope",
        lambda c: [
            "tree",
            "-s",
            c.space,
            "-m",
            "saliency",
            "--linkage",
            "nope",
            "-o",
            c.root / "t.png",
        ],
        "fail",
    ),
    (
        "arguments",
        "heatmap -o a folder",
        lambda c: ["heatmap", "-s", c.space, "-m", "saliency", "-o", c.root],
        "fail",
    ),
    (
        "arguments",
        "rank unknown target",
        lambda c: ["rank", "zzz", "-s", c.space, "-m", "saliency"],
        "fail",
    ),
    (
        "arguments",
        "rank with two sources",
        lambda c: ["rank", "a", "-s", c.space, "--affinity", c.file("a.csv", GOOD)],
        "fail",
    ),
    (
        "arguments",
        "report -o into a missing folder's file is made",
        lambda c: ["report", "-s", c.space, "-m", "saliency", "-o", c.root / "r" / "x.html"],
        "ok",
    ),
    ("arguments", "salvage onto itself", lambda c: ["salvage", c.space, c.space], "fail"),
    (
        "arguments",
        "salvage onto an existing file",
        lambda c: ["salvage", c.space, c.file("e.h5", "x")],
        "fail",
    ),
    (
        "arguments",
        "transfer -o a folder",
        lambda c: ["transfer", c.photos, "-s", c.space, "-o", c.root],
        "fail",
    ),
    ("arguments", "unknown command", lambda c: ["nope"], "usage"),
    ("arguments", "missing required option", lambda c: ["distance"], "usage"),
]


# --------------------------------------------------------------------------- the runner
def _models(space: Path) -> list[str] | None:
    try:
        return sorted(m.name for m in ModelSpace(space).models())
    except Exception:
        return None


def _run(args: list) -> tuple[int, str, BaseException | None]:
    r = CliRunner().invoke(app, [str(a) for a in args])
    return r.exit_code, r.output, r.exception


@pytest.mark.parametrize("category,case,make,kind", CASES, ids=[f"{c[0]}: {c[1]}" for c in CASES])
def test_hostile(ctx, category, case, make, kind):
    args = make(ctx)  # may damage the copied space: that is the space the command meets
    before = _sha(ctx.space)
    models_before = _models(ctx.space)
    code, out, exc = _run(args)
    traceback = "Traceback" in out or (exc is not None and not isinstance(exc, SystemExit))
    lines = [ln for ln in out.strip().splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error:")]
    clear = (code == 1 and len(errors) == 1 and lines[-1].startswith("error:")) or (
        code == 2 and "Error" in out
    )
    # refused: the space is byte-identical; accepted: every model not removed is still there
    removed = {"a"} if args[0] == "remove" and code == 0 else set()
    space_ok = _sha(ctx.space) == before or (
        code == 0
        and models_before is not None
        and set(models_before) - removed <= set(_models(ctx.space) or ())
    )
    outcome = "ok" if code == 0 else ("clear" if clear else "unclear")
    RESULTS[(category, "cases")] += 1
    RESULTS[(category, outcome)] += 1
    RESULTS[(category, "traceback")] += traceback
    RESULTS[(category, "data lost")] += not space_ok
    assert not traceback, f"{case}: traceback\n{out}\n{exc!r}"
    assert space_ok, f"{case}: the space changed\n{out}"
    if kind == "ok":
        assert code == 0, f"{case}: refused\n{out}"
    elif kind == "usage":
        assert code == 2 and "Error" in out, out
    elif kind == "fail" or code != 0:
        assert code != 0, f"{case}: accepted\n{out}"
        assert clear, f"{case}: not one clear error line\n{out}"
        # hostile input is the user's: the line says what was wrong, not which exception fired
        assert "(unexpected;" not in out, f"{case}: an internal error, not a sentence\n{out}"


# --------------------------------------------------------------------------- property-based
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(name=st.text(max_size=12))
def test_remove_any_name(base, tmp_path_factory, name):
    """`remove NAME` for any text removes exactly that model or nothing."""
    path = tmp_path_factory.mktemp("rm") / base.space.name
    copy_space(base.space, path)
    before = _sha(path)
    try:
        ModelSpace(path).remove_model(name)
    except OnnxAttrError:
        assert _sha(path) == before
    else:
        assert name in {"a", "b", "c"}
        assert sorted(m.name for m in ModelSpace(path).models()) == sorted({"a", "b", "c"} - {name})
        assert check_space(path).ok


@settings(max_examples=150, deadline=None)
@given(data=st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_csv_reader_any_bytes(tmp_path_factory, data):
    """Any bytes: a parsed matrix or an OnnxAttrError, never another exception."""
    p = tmp_path_factory.mktemp("csv") / "x.csv"
    p.write_bytes(data)
    try:
        rows, cols, vals = read_labelled_csv(p)
    except OnnxAttrError:
        return
    assert vals.shape == (len(rows), len(cols))


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(offset=st.integers(0, 10**9), bit=st.integers(0, 7))
def test_any_flipped_bit_in_stored_values_is_detected(base, tmp_path_factory, offset, bit):
    """A bit flipped anywhere in a model's stored map bytes (compressed, as stored): either the
    values read back are unchanged (e.g. a bit of a compressor header nobody reads) and all is
    well, or `check` names exactly that dataset, reading it refuses, and the other models salvage
    intact."""
    path = tmp_path_factory.mktemp("flip") / base.space.name
    copy_space(base.space, path)
    segment = segment_of(path, "b")
    chunks = stored_bytes(segment, "model/maps/saliency")
    start, size = chunks[offset % len(chunks)]
    raw = bytearray(segment.read_bytes())
    raw[start + (offset // len(chunks)) % size] ^= 1 << bit
    segment.write_bytes(bytes(raw))
    with h5py.File(base.space, "r") as f:
        want = f["models/b/maps/saliency"][()]
    try:
        with h5py.File(path, "r") as f:
            changed = not np.array_equal(f["models/b/maps/saliency"][()], want, equal_nan=True)
    except OSError:  # the decompressor rejects the chunk
        changed = True
    report = check_space(path)
    # the segment's bytes changed either way (its committed sha256 says so)
    if not changed:
        assert [d.path for d in report.damaged] == ["models/b"]
        return
    assert [d.path for d in report.damaged] == ["models/b", "models/b/maps/saliency"]
    with pytest.raises(OnnxAttrError, match="damaged"):
        ModelSpace(path).read_maps("b", "saliency")
    from onnxattr.integrity import salvage

    out = path.with_name("new.h5")
    salvage(path, out)
    assert sorted(m.name for m in ModelSpace(out).models()) == ["a", "c"]
    np.testing.assert_array_equal(
        ModelSpace(out).read_maps("a", "saliency"),
        ModelSpace(base.space).read_maps("a", "saliency"),
    )
