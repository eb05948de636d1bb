"""The explorer: its embedded data against the analysis it shows (rankings, intervals, oracle,
maps), its size at 500 models, and the page itself in a real headless Chromium (Selenium).

The browser tests skip without a local Chromium and chromedriver, and fail instead when
``CI=true`` (CI installs them: .ci/run). Screenshots and measured load times go to
``test-artifacts/explorer/`` (or ``$ONNXATTR_TEST_ARTIFACTS``)."""

from __future__ import annotations

import base64
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import onnxattr
from onnxattr.analysis.evaluation import evaluate, read_oracle
from onnxattr.analysis.explorer import (
    U8_NAN,
    U16_NAN,
    dequantise,
    explorer_data,
    map_thumbnail,
    quantise,
    write_explorer,
)
from onnxattr.analysis.report import explorer_path, write_report
from onnxattr.analysis.space_view import (
    estimator_views,
    rank_intervals,
    read_models,
)
from onnxattr.cli import app

from .space_factory import random_space

ESTIMATORS = ["saliency", "cka"]
ARTIFACTS = Path(os.environ.get("ONNXATTR_TEST_ARTIFACTS",
                                Path(__file__).resolve().parent.parent / "test-artifacts"))


def _u16(b64: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(b64), dtype="<u2")


def _u8(b64: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(b64), dtype=np.uint8)


@pytest.fixture(scope="module")
def space(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("explorer") / "space.h5"
    random_space(path, n_models=7, n_probe=12, size=8)
    return path


@pytest.fixture(scope="module")
def oracle_csv(space: Path) -> Path:
    rng = np.random.default_rng(3)
    names = onnxattr.models(space)
    path = space.with_name("oracle.csv")
    rows = [",".join(["target", *names])]
    for t in names:
        rows.append(",".join([t, *("" if s == t else f"{rng.uniform():.4f}" for s in names)]))
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.fixture(scope="module")
def views(space: Path, oracle_csv: Path) -> list:
    return list(estimator_views(space, ESTIMATORS, read_oracle(oracle_csv), top=2, bootstrap=8))


@pytest.fixture(scope="module")
def data(space: Path, views: list, oracle_csv: Path) -> dict:
    return explorer_data(space, views, read_models(space), read_oracle(oracle_csv), top=2,
                         map_method="saliency", top_k=4)


# ------------------------------------------------------------------------------ the data
def test_quantise_round_trips_within_one_step_and_keeps_nan() -> None:
    v = np.array([-0.2, 0.0, 0.37, 0.9, np.nan, 5.0])
    q = quantise(v, -0.2, 0.9, U16_NAN)
    back = dequantise(q, -0.2, 0.9, U16_NAN)
    assert q[4] == U16_NAN and np.isnan(back[4])
    assert np.allclose(back[:4], v[:4], atol=1.1 / (U16_NAN - 1))
    assert back[5] == pytest.approx(0.9)  # clipped to the range


def test_rankings_and_intervals_are_the_analysis(data: dict, views: list) -> None:
    names = [m["n"] for m in data["models"]]
    for est, view in zip(data["estimators"], views, strict=True):
        m, k = view.matrix, est["k"]
        assert est["name"] == m.estimator and k == 4
        ids = est["ids"]
        order = _u16(est["order"]).reshape(len(ids), k)
        val = dequantise(_u16(est["val"]).reshape(len(ids), k), est["lo"], est["hi"], U16_NAN)
        st = est["stab"]
        rlo, rhi = (_u16(st[f]).reshape(len(ids), k) for f in ("rlo", "rhi"))
        tied = _u8(st["tied"]).reshape(len(ids), k).astype(bool)
        step = (est["hi"] - est["lo"]) / (U16_NAN - 1)
        for p, target in enumerate(names[i] for i in ids):
            expected = onnxattr.rank(m, target, top=k)
            assert [names[ids[q]] for q in order[p]] == [n.name for n in expected]
            assert np.allclose(val[p], [n.affinity for n in expected], atol=step)
            iv = rank_intervals(view.stability, m.index(target), order[p].tolist())
            assert rlo[p].tolist() == iv[:, 0].tolist() and rhi[p].tolist() == iv[:, 1].tolist()
            assert tied[p].tolist() == [t for _, _, t in view.ties.ranked(target)][:k]
        heat = dequantise(_u8(est["heat"]).reshape(len(ids), len(ids)), est["lo"], est["hi"],
                          U8_NAN)
        off = ~np.eye(len(ids), dtype=bool)
        assert np.allclose(heat[off], m.values[off], atol=(est["hi"] - est["lo"]) / 254)
        assert sorted(est["tree"]["leaves"]) == list(range(len(ids)))


def test_agreement_is_the_analysis(data: dict, views: list) -> None:
    from onnxattr.analysis.confidence import disagreement

    names = [m["n"] for m in data["models"]]
    assert data["agreement"]["estimators"] == ESTIMATORS  # no default or paper pair: all of them
    for i, row in data["agreement"]["rows"].items():
        d = disagreement([v.matrix for v in views], names[int(i)])
        assert row["disagree"] == d.disagree and row["line"] == d.line()
        assert [names[j] for j in row["first"]] == list(d.first.values())


def test_oracle_and_evaluation_are_the_measured_ones(data: dict, views: list,
                                                     oracle_csv: Path) -> None:
    orc = read_oracle(oracle_csv)
    names = [m["n"] for m in data["models"]]
    for t, cells in data["oracle"]["rows"].items():
        ti = orc.targets.index(names[int(t)])
        for s, v in cells:
            assert v == pytest.approx(orc.values[ti, orc.sources.index(names[s])], abs=1e-4)
    for est, view in zip(data["estimators"], views, strict=True):
        ev = evaluate(view.matrix, orc, top=2)
        assert est["eval"]["p"]["1"] == pytest.approx(ev.precision[0], abs=1e-4)
        assert est["eval"]["rho"] == pytest.approx(ev.spearman, abs=1e-4)


def test_map_thumbnails_are_each_models_maps(space: Path, data: dict) -> None:
    import h5py

    idx = data["maps"]["probe_index"]
    assert len(idx) == 4 and len(data["maps"]["images"]) == 4
    with h5py.File(space, "r") as f:
        for i, m in enumerate(data["models"]):
            maps = f[f"models/{m['n']}/maps/saliency"][idx]
            assert data["maps"]["thumbs"][str(i)] == [map_thumbnail(a) for a in maps]
    assert data["maps"]["thumbs"]["0"] != data["maps"]["thumbs"]["1"]


@pytest.fixture(scope="module")
def explorer_500(tmp_path_factory):
    """A synthetic 500-model space's explorer (two estimators; no probe resampling, whose
    per-target Spearman of the halves costs ~10 s at this size; the intervals would add at most
    9 bytes per ranked source, within the bound below)."""
    path = tmp_path_factory.mktemp("s500") / "s500.h5"
    random_space(path, n_models=500, n_probe=12, size=16, dim=8, methods=("saliency",))
    return write_explorer(path, path.with_suffix(".html"), estimators=ESTIMATORS, bootstrap=0,
                          top_k=50)


def test_size_is_bounded_at_500_models(explorer_500) -> None:
    n, k = 500, 50
    # per estimator: 1-byte heatmap cells, 2-byte order/value/4 intervals and 1-byte marks for
    # the top-K, base64 (4/3); maps: 500 models x 4 thumbnails of at most 48x48 palette pixels
    per_estimator = 4 / 3 * (n * n + n * k * (2 * 6 + 1))
    bound = len(ESTIMATORS) * per_estimator + 4 / 3 * 500 * 4 * (48 * 48 + 300) + 200_000
    assert explorer_500.n_models == 500 and explorer_500.size_bytes < bound
    print(f"explorer of 500 models, {len(ESTIMATORS)} estimators: "
          f"{explorer_500.size_bytes / 1e6:.2f} MB")


def test_report_writes_and_links_the_explorer(space: Path, oracle_csv: Path,
                                              tmp_path: Path) -> None:
    out = write_report(space, tmp_path / "r.html", oracle=oracle_csv, top=2,
                       estimators=["saliency"], bootstrap=4)
    exp = explorer_path(out)
    assert exp.name == "r.explorer.html" and exp.exists()
    assert f"href='{exp.name}'" in out.read_text()
    assert '"name":"saliency"' in exp.read_text()
    plain = write_report(space, tmp_path / "p.html", estimators=["saliency"], bootstrap=0,
                         explorer=False)
    assert not explorer_path(plain).exists() and "explorer" not in plain.read_text()


def test_cli_explore(space: Path, oracle_csv: Path, tmp_path: Path) -> None:
    out = tmp_path / "x.html"
    r = CliRunner().invoke(app, ["explore", str(space), "-o", str(out), "--oracle",
                                 str(oracle_csv), "-m", "saliency", "--top", "2",
                                 "--bootstrap", "4"])
    assert r.exit_code == 0, r.output
    assert "wrote" in r.output and "7 models, 1 estimators" in r.output and out.exists()
    bad = CliRunner().invoke(app, ["explore", str(space), "-o", str(out), "--linkage", "nope"])
    assert bad.exit_code == 1 and "unknown linkage" in bad.output


# ------------------------------------------------------------------------------ the page
def _driver():
    """A headless Chromium through the system chromedriver: skip when absent, fail in CI."""
    in_ci = os.environ.get("CI", "").lower() == "true"
    chromium = next((shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome")
                     if shutil.which(b)), None)
    chromedriver = shutil.which("chromedriver")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        chromium = None
    if chromium is None or chromedriver is None:
        msg = "the browser tests need selenium, chromium and chromedriver (apt: chromium chromium-driver)"
        pytest.fail(msg) if in_ci else pytest.skip(msg)
    opts = webdriver.ChromeOptions()
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--window-size=1400,1000", "--allow-file-access-from-files"):
        opts.add_argument(a)
    opts.binary_location = chromium
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(chromedriver), options=opts)


@pytest.fixture(scope="module")
def browser():
    d = _driver()
    yield d
    d.quit()


def _shot(browser, name: str) -> Path:
    ARTIFACTS.joinpath("explorer").mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / "explorer" / f"{name}.png"
    browser.save_screenshot(str(path))
    return path


def _open(browser, page: Path) -> float:
    """Load ``page`` from disk; the seconds until it is drawn. Console errors fail the test."""
    browser.get_log("browser")  # drop earlier pages' messages
    t0 = time.perf_counter()
    browser.get(page.resolve().as_uri())
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(browser, 30).until(
        lambda d: d.execute_script("return document.body.dataset.ready === '1'"))
    secs = time.perf_counter() - t0
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors
    return secs


def _ranked(browser) -> list[str]:
    from selenium.webdriver.common.by import By

    return [tr.get_attribute("data-source")
            for tr in browser.find_elements(By.CSS_SELECTOR, "#ranking tbody tr")]


@pytest.fixture(scope="module")
def page(space: Path, oracle_csv: Path, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("page") / "explorer.html"
    write_explorer(space, out, oracle_csv, ESTIMATORS, top=2, bootstrap=8, top_k=6)
    text = out.read_text()
    start = text.index('id="explorer-data">') + len('id="explorer-data">')
    return out, json.loads(text[start:text.index("</script>", start)].replace("<\\/", "</"))


def test_page_loads_and_selecting_a_target_renders_its_ranking(browser, page, views) -> None:
    from selenium.webdriver.common.by import By

    path, _ = page
    _open(browser, path)
    assert browser.find_element(By.ID, "target").text == "m0"
    assert _ranked(browser) == [n.name for n in onnxattr.rank(views[0].matrix, "m0")]
    box = browser.find_element(By.ID, "search")
    box.send_keys("m5")
    rows = browser.find_elements(By.CSS_SELECTOR, "#models .mrow")
    assert [r.get_attribute("data-model") for r in rows] == ["m5"]
    rows[0].click()
    assert browser.find_element(By.ID, "target").text == "m5"
    assert _ranked(browser) == [n.name for n in onnxattr.rank(views[0].matrix, "m5")]
    marks = [td.text == "≈" for td in browser.find_elements(By.CSS_SELECTOR, "#ranking td.tied")]
    assert marks == [t for _, _, t in views[0].ties.ranked("m5")]
    agreement = browser.find_element(By.ID, "agreement").text
    assert agreement == page[1]["agreement"]["rows"]["5"]["line"]
    assert "measured rank" in browser.find_element(By.CSS_SELECTOR, "#ranking thead").text
    _shot(browser, "target-m5")


def test_switching_estimators_changes_the_ranking_and_marks_shifts(browser, page, views) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    path, _ = page
    _open(browser, path)
    first = {t: [n.name for n in onnxattr.rank(views[0].matrix, t)] for t in views[0].matrix.names}
    second = {t: [n.name for n in onnxattr.rank(views[1].matrix, t)] for t in first}
    target = next(t for t in first if first[t] != second[t])  # a target the estimators disagree on
    browser.find_element(By.CSS_SELECTOR, f"#models .mrow[data-model='{target}']").click()
    assert _ranked(browser) == first[target]
    Select(browser.find_element(By.ID, "estimator")).select_by_visible_text(ESTIMATORS[1])
    assert _ranked(browser) == second[target]
    for r, tr in enumerate(browser.find_elements(By.CSS_SELECTOR, "#ranking tbody tr")):
        was = first[target].index(tr.get_attribute("data-source"))
        cls = tr.get_attribute("class").split()
        assert ("up" in cls) == (was > r) and ("down" in cls) == (was < r)
    assert browser.find_elements(By.CSS_SELECTOR, "#ranking tr.up td.shift")
    _shot(browser, "estimator-switched")


def test_map_comparison_shows_both_models_maps_of_the_same_probe_images(browser, page) -> None:
    from selenium.webdriver.common.by import By

    path, data = page
    _open(browser, path)
    index = {m["n"]: i for i, m in enumerate(data["models"])}
    rows = browser.find_elements(By.CSS_SELECTOR, "#ranking tbody tr")
    source = rows[2].get_attribute("data-source")
    rows[2].click()

    def srcs(col: str) -> list[str]:
        imgs = browser.find_elements(By.CSS_SELECTOR, f"#maps td.{col} img")
        return [i.get_attribute("src").split(",", 1)[1] for i in imgs]

    assert srcs("A") == data["maps"]["thumbs"][str(index["m0"])]
    assert srcs("B") == data["maps"]["thumbs"][str(index[source])]
    probes = browser.find_elements(By.CSS_SELECTOR, "#maps img[data-probe]")
    assert [p.get_attribute("src").split(",", 1)[1] for p in probes] == data["maps"]["images"]
    assert all(i.get_attribute("naturalWidth") != "0"
               for i in browser.find_elements(By.CSS_SELECTOR, "#maps img"))
    _shot(browser, "maps")


def test_tree_and_heatmap_show_metadata_on_hover(browser, page) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.actions.wheel_input import ScrollOrigin
    from selenium.webdriver.common.by import By

    path, _ = page
    _open(browser, path)
    heat = browser.find_element(By.ID, "heat")
    ActionChains(browser).move_to_element_with_offset(heat, 10, 10).perform()
    tip = browser.find_element(By.ID, "tip")
    assert "framework: synthetic" in tip.text and "affinity" in tip.text
    ActionChains(browser).scroll_from_origin(ScrollOrigin.from_element(heat), 0, -300).perform()
    _shot(browser, "heatmap")
    browser.find_element(By.CSS_SELECTOR, ".tabs button[data-tab='tree']").click()
    tree = browser.find_element(By.ID, "tree")
    assert tree.is_displayed() and not heat.is_displayed()
    ActionChains(browser).move_to_element_with_offset(tree, 0, 0).perform()
    assert "encoder node: enc" in browser.find_element(By.ID, "tip").text
    _shot(browser, "tree")


def test_500_models_load_and_stay_usable(browser, explorer_500) -> None:
    """The page size and in-browser load time at 500 models (written to the artefacts)."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    res = explorer_500
    secs = _open(browser, res.path)
    assert len(browser.find_elements(By.CSS_SELECTOR, "#models .mrow")) < 60  # only the visible
    browser.find_element(By.ID, "search").send_keys("m499")
    browser.find_element(By.CSS_SELECTOR, "#models .mrow[data-model='m499']").click()
    assert len(_ranked(browser)) == 50 and browser.find_element(By.ID, "target").text == "m499"
    heat = browser.find_element(By.ID, "heat")
    ActionChains(browser).move_to_element(heat).perform()
    assert "affinity ≈" in browser.find_element(By.ID, "tip").text
    in_page = browser.execute_script("return window.explorerLoadMs")
    _shot(browser, "500-models")
    ARTIFACTS.joinpath("explorer").mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "explorer" / "500-models.json").write_text(json.dumps(
        {"bytes": res.size_bytes, "load_s": secs, "script_ms": in_page}))
    assert secs < 20, secs


def test_a_space_without_maps_or_oracle_still_opens(browser, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    path = tmp_path / "features.h5"
    random_space(path, n_models=4, n_probe=8, methods=())
    res = write_explorer(path, tmp_path / "f.html", bootstrap=0)
    assert "cka" in res.estimators and '"maps":null' in res.path.read_text()
    _open(browser, res.path)
    assert not browser.find_element(By.ID, "mapsec").is_displayed()
    assert len(_ranked(browser)) == 3 and "measured" not in browser.find_element(
        By.CSS_SELECTOR, "#ranking thead").text
    browser.find_element(By.CSS_SELECTOR, ".tabs button[data-tab='eval']").click()
    assert "--oracle" in browser.find_element(By.ID, "tab-eval").text
