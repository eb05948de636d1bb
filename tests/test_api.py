"""The public Python API: `import onnxattr` alone is enough for a notebook."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import onnxattr
from onnxattr.analysis.distances import write_matrix


def test_version_matches_pyproject() -> None:
    pyproject = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text(encoding="utf-8")
    expected = re.search(r'(?m)^version\s*=\s*"([^"]+)"', pyproject).group(1)
    assert onnxattr.__version__ == expected
    out = subprocess.run([sys.executable, "-c", "import onnxattr; print(onnxattr.__version__)"],
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == expected
    # the API resolves lazily: importing onnxattr loads neither torch nor onnx2torch
    lazy = subprocess.run([sys.executable, "-c", "import sys, onnxattr; onnxattr.__all__; "
                           "print(sorted({'torch', 'onnx2torch', 'h5py'} & set(sys.modules)))"],
                          capture_output=True, text=True, check=True)
    assert lazy.stdout.strip() == "[]"


def readme_block(heading: str) -> str:
    """The first ```python block after ``heading`` in the README."""
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    section = text[text.index(heading):]
    return section[section.index("```python\n") + 10:section.index("\n```", section.index("```python"))]


def test_readme_api_example_runs(tmp_path, monkeypatch, capsys) -> None:
    """The README's API block, as written, on tiny exported networks, random photos and an oracle."""
    import numpy as np
    import torch
    from PIL import Image

    from onnxattr.analysis.evaluation import read_oracle

    from .models import TinyVGG, export

    rng = np.random.default_rng(0)
    (tmp_path / "photos").mkdir()
    for i in range(6):
        Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(
            tmp_path / "photos" / f"{i}.png")
    names = ["vgg_a", "vgg_b", "vgg_c", "vgg_d"]
    for i, name in enumerate(names):
        torch.manual_seed(i)
        export(TinyVGG(), tmp_path / f"{name}.onnx", (1, 3, 24, 24))
    oracle = [[""] + names] + [[t] + [str(rng.random()) for _ in names] for t in names]
    (tmp_path / "transfers.csv").write_text("\n".join(",".join(r) for r in oracle) + "\n")
    monkeypatch.chdir(tmp_path)

    exec(compile(readme_block("## Python API"), "README.md", "exec"), {})

    out = capsys.readouterr().out
    assert "vgg_b: distance" in out and "'svcca'" in out
    aff = onnxattr.affinity("space.h5", "elrp")
    assert aff.names == names and aff.values.shape == (4, 4)
    # distances are the paper's: d = 1 / mean cos, the diagonal included
    np.testing.assert_allclose(onnxattr.distances("space.h5", "elrp").values, 1 / aff.values,
                               rtol=1e-6)
    ranked = onnxattr.rank(aff, "vgg_a")
    assert [nb.name for nb in ranked] == sorted(names[1:], key=lambda n: -aff.values[0, aff.index(n)])
    (e_elrp, e_cka) = onnxattr.evaluate("space.h5", read_oracle("transfers.csv"), ["elrp", "cka"],
                                        top=2)
    assert (e_elrp.estimator, e_cka.estimator) == ("elrp", "cka")
    assert len(e_elrp.precision) == 3
    assert (tmp_path / "report.html").stat().st_size > 1000
    assert onnxattr.models("space.h5") == names


def test_api_errors_and_lazy_exports(tmp_path) -> None:
    import pytest

    assert "add" in dir(onnxattr) and "register_estimator" in onnxattr.__all__
    with pytest.raises(AttributeError):
        onnxattr.not_there  # noqa: B018
    with pytest.raises(onnxattr.OnnxAttrError, match="does not exist"):
        onnxattr.affinity(tmp_path / "missing.h5", "elrp")
    assert onnxattr.method_parameters(["saliency", "elrp", "lrp"], epsilon=0.1,
                                      lrp_preset="epsilon_plus_flat") == {
        "elrp": {"epsilon": 0.1}, "lrp": {"epsilon": 0.1, "preset": "epsilon_plus_flat"}}


def test_errors_in_api_terms_and_cli_flags(tmp_path) -> None:
    """The library names API parameters; the CLI shows the same error with its flags."""
    import pytest
    import torch
    from typer.testing import CliRunner

    from onnxattr.cli import app

    from .models import TinyVGG, export

    torch.manual_seed(0)
    model = export(TinyVGG(), tmp_path / "vgg.onnx", (1, 3, 24, 24))
    space = tmp_path / "s.h5"
    onnxattr.build_probe(None, size=16, n=3, space=space)
    onnxattr.add(space, model, name="vgg", methods=["saliency"])
    with pytest.raises(onnxattr.OnnxAttrError, match=r"pass `overwrite=True` or another `name`"):
        onnxattr.add(space, model, name="vgg", methods=["saliency"])
    r = CliRunner().invoke(app, ["add", str(model), "--space", str(space), "--name", "vgg",
                                 "--methods", "saliency"])
    assert r.exit_code == 1 and "pass --overwrite or another --name" in r.output
    assert "`" not in r.output.split("error:")[1].split("(")[0]


def _cli_error(args: list[str]) -> str:
    """The one `error:` line the CLI prints for ``args``, whitespace folded."""
    from typer.testing import CliRunner

    from onnxattr.cli import app

    r = CliRunner().invoke(app, args)
    assert r.exit_code == 1, r.output
    return " ".join(r.output.split("error:", 1)[1].split())


def test_the_api_and_the_cli_refuse_the_same_inputs_alike(tmp_path) -> None:
    """Rules live in the library (issue 22): the CLI shows the API's message with its flags."""
    from dataclasses import replace

    import pytest

    from onnxattr.benchmark.run import run_benchmark
    from onnxattr.benchmark.world import Config
    from onnxattr.cli._app import cli_terms
    from onnxattr.transfer import measure_transfer

    from .space_factory import random_space

    space = tmp_path / "s.h5"
    random_space(space, n_models=3, n_probe=6, size=4, dim=5)
    cases = [  # (API call, CLI arguments)
        (lambda: onnxattr.add(space, tmp_path / "m.onnx", epsilon=-1.0),
         ["add", str(tmp_path / "m.onnx"), "--space", str(space), "--epsilon", "-1"]),
        (lambda: onnxattr.stability(space, "saliency", bootstrap=1),
         ["rank", "m0", "--space", str(space), "--method", "saliency", "--bootstrap", "1"]),
        (lambda: onnxattr.stability(space, "saliency", bootstrap=-3),
         ["rank", "m0", "--space", str(space), "--method", "saliency", "--bootstrap", "-3"]),
        (lambda: onnxattr.report(space, tmp_path / "r.html", bootstrap=1),
         ["report", "--space", str(space), "--out", str(tmp_path / "r.html"), "--bootstrap", "1"]),
        (lambda: measure_transfer(space, [], batch_size=0),
         ["transfer", str(tmp_path), "--space", str(space), "--batch-size", "0"]),
        (lambda: run_benchmark(tmp_path / "b", replace(Config(), world=7), use_committed=True),
         ["bench", "taskonomy-mini", "--out", str(tmp_path / "b"), "--committed", "--world", "7"]),
    ]
    for api_call, args in cases:
        with pytest.raises(onnxattr.OnnxAttrError) as exc:
            api_call()
        api_message = " ".join(str(exc.value).split())
        assert "--" not in api_message, api_message  # API terms: parameter names, not flags
        assert _cli_error(args) == cli_terms(api_message), args
    assert not (tmp_path / "r.html").exists()


def test_library_warnings_name_parameters_and_the_cli_shows_flags(tmp_path) -> None:
    """A note of the library (here: every source relevant at top-5 of 3 models) names the API
    parameter; the CLI shows the same note with its flag."""
    import numpy as np
    from typer.testing import CliRunner

    from onnxattr.cli import app
    from onnxattr.cli._app import cli_terms

    names = ["a", "b", "c"]
    aff = onnxattr.LabelledMatrix(names, np.array([[1, .5, .2], [.5, 1, .3], [.2, .3, 1]]))
    write_matrix(aff, tmp_path / "aff.csv")
    write_matrix(onnxattr.LabelledMatrix(names, aff.values[::-1, ::-1].copy()), tmp_path / "o.csv")
    (ev,) = onnxattr.evaluate(aff, tmp_path / "o.csv", top=5)
    (note,) = [w for w in ev.warnings if "below" in w]
    assert "--" not in note
    r = CliRunner().invoke(app, ["evaluate", "--oracle", str(tmp_path / "o.csv"),
                                 "--affinity", str(tmp_path / "aff.csv"), "--top", "5"])
    assert r.exit_code == 0, r.output
    assert " ".join(cli_terms(note).split()) in " ".join(r.output.split())
    assert cli_terms(note) != note


def test_check_salvage_sketch_and_feature_checks_are_api_calls(tmp_path) -> None:
    """What `onnxattr check/salvage/sketch/features` do is one API call each."""
    import torch

    from .models import TinyVGG, export

    torch.manual_seed(0)
    model = export(TinyVGG(), tmp_path / "vgg.onnx", (1, 3, 24, 24))
    space = tmp_path / "s.h5"
    onnxattr.build_probe(None, size=16, n=3, space=space)
    for name in ("a", "b"):
        onnxattr.add(space, model, name=name, methods=["saliency"], preprocessing="unit")
    report = onnxattr.check(space)
    assert report.ok and report.models == {"a": True, "b": True}
    assert onnxattr.sketch(space, dims=8) == {"a": ["saliency"], "b": ["saliency"]}
    assert onnxattr.sketch(space, dims=8) == {}
    assert onnxattr.affinity(space, "sketch:saliency").names == ["a", "b"]
    assert [(c.name, c.status) for c in onnxattr.check_features(space, ["b"])] == [("b", "ok")]
    saved = onnxattr.salvage(space, tmp_path / "copy.h5")
    assert saved.models == {"a": True, "b": True}
    assert onnxattr.models(tmp_path / "copy.h5") == ["a", "b"]


def test_nodes_is_what_the_cli_lists(tmp_path) -> None:
    import json

    import torch
    from typer.testing import CliRunner

    from onnxattr.cli import app

    from .models import TinyVGG, export

    torch.manual_seed(0)
    model = export(TinyVGG(), tmp_path / "vgg.onnx", (1, 3, 24, 24))
    infos = onnxattr.nodes(model)
    assert sum(bool(i.candidate) for i in infos) == 1
    r = CliRunner().invoke(app, ["nodes", str(model), "--json", "--all"])
    assert r.exit_code == 0, r.output
    assert [row["name"] for row in json.loads(r.output)] == [i.name for i in infos]
