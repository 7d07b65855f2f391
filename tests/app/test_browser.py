"""The slider app in a real browser: headless Debian chromium driven by Selenium through Debian's chromedriver
(both given by path: Selenium Manager never downloads a driver or a browser).

``python -m miro.app`` starts on a free local port with the shipped reference model (8 steps, 4 images); the test
types a prompt, unticks contrast among the free rewards (the reference model recommends leaving colourfulness and
contrast free, so the page starts with both ticked), moves the contrast slider to 0.1, generates, moves it to 0.9, generates again, and checks that
images appear, that they change with the slider, that the measured contrast rises with it (every image and the
mean), and that the download holds the images with their settings.  Then an empty prompt (a message on the page),
the sweep tab (measured contrast against its target) and Cancel of a long generation (the job stops at its next
step and the model is free again).  One test function, so that one app serves every check under pytest-xdist.

Contrast, not colourfulness: on the reference model, at a fixed seed, 8 steps and the app's decoupled guidance
(text 3, reward 1), contrast target 0.1 -> 0.9 raised the measured RMS contrast of every one of 4 images (mean
0.103 -> 0.153), while colourfulness 0.1 -> 0.9 moved it by less than 1%.

Skipped, with the reason, when chromium, chromedriver, gradio or selenium is missing, unless
``MIRO_REQUIRE_BROWSER=1`` (scripts/test.sh sets it in CI, where it installs them), which makes that a failure.
``MIRO_APP_SCREENSHOTS=docs/app`` saves the page after the second generation (app.png) and the sweep (sweep.png).
"""

import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from miro.app import INSTALL_HINT
from tests.app.conftest import ROOT

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
PROMPT = "a photo of a red circle"
REWARD, LOW, HIGH = "contrast", 0.1, 0.9
LONG = 1000  # steps of the generation the test cancels: 100 could finish before the click landed (seen once)
MARGIN = 0.02  # the measured mean contrast must rise by at least this much (seen: 0.05)


def _missing() -> list[str]:
    missing = [name for name, path in (("chromium", CHROMIUM), ("chromedriver (chromium-driver)", CHROMEDRIVER)) if not path]
    for module in ("gradio", "selenium"):
        try:
            __import__(module)
        except ImportError:
            missing.append(f"the Python package {module}")
    return missing


@pytest.fixture(scope="module")
def ready():
    missing = _missing()
    if missing:
        hints = ["apt-get install chromium chromium-driver" if not (CHROMIUM and CHROMEDRIVER) else "",
                 INSTALL_HINT if any("gradio" in m for m in missing) else "",
                 'pip install -e ".[dev]" (selenium)' if any("selenium" in m for m in missing) else ""]  # fmt: skip
        reason = f"the browser test needs {', '.join(missing)}: {'; '.join(h for h in hints if h)} (scripts/test.sh installs them)"
        if os.environ.get("MIRO_REQUIRE_BROWSER") == "1":
            pytest.fail(reason)
        pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def app(ready, tmp_path_factory):
    """The app's URL and its log file: ``python -m miro.app`` on a free port of 127.0.0.1."""
    folder = tmp_path_factory.mktemp("app")
    port, log = _free_port(), folder / "app.log"
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", GRADIO_ANALYTICS_ENABLED="False")
    args = [sys.executable, "-m", "miro.app", f"port={port}", "threads=1", "settings.steps=8", "num_images=4", f"max_steps={LONG}",
            f"sweep.reward={REWARD}", "sweep.num_targets=3", "sweep.num_seeds=2"]  # fmt: skip
    with open(log, "w") as out:
        proc = subprocess.Popen(args, cwd=folder, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 240
        while True:
            if proc.poll() is not None:
                pytest.fail(f"the app exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the app did not answer on {url}:\n{log.read_text()[-4000:]}")
            time.sleep(0.5)
        yield url, log
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def driver(ready):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    saved = os.environ.get("SE_OFFLINE")
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager: never download (the paths below are used anyway)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--no-first-run",
                "--disable-extensions", "--window-size=1400,1250", "--hide-scrollbars"):  # fmt: skip
        options.add_argument(arg)
    drv = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    drv.set_page_load_timeout(60)
    try:
        yield drv
    finally:
        drv.quit()
        if saved is None:
            os.environ.pop("SE_OFFLINE", None)
        else:
            os.environ["SE_OFFLINE"] = saved


# ----------------------------------------------------------------------------------------------- page helpers
def _wait(drv, condition, timeout: float = 180, what: str = ""):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(drv, timeout, poll_frequency=0.2).until(condition, message=what)


def _css(drv, selector):
    from selenium.webdriver.common.by import By

    return drv.find_elements(By.CSS_SELECTOR, selector)


def _open(drv, url):
    drv.get(url)
    return _wait(drv, lambda d: (_css(d, "#prompt textarea") or [False])[0], 60, "the page did not render")


def _move_slider(drv, elem_id: str, presses: str, value: float):
    """Move a slider with the keyboard (Home / End, then arrows), as a person does, and check where it went."""
    (rng,) = _css(drv, f"#{elem_id} input[type=range]")
    rng.send_keys(presses)
    (box,) = _css(drv, f"#{elem_id} input[type=number]")
    _wait(drv, lambda d: abs(float(box.get_attribute("value")) - value) < 1e-9, 10, f"{elem_id} did not reach {value}")
    assert abs(float(rng.get_attribute("value")) - value) < 1e-9


def _error_on_page(drv, status: str) -> None:
    boxes = _css(drv, f"#{status} .miro-status[data-kind=error]")
    if boxes:
        raise AssertionError(f"the page shows an error: {boxes[0].text}")


def _generation(drv, after: int) -> dict:
    """Wait for a generation newer than ``after``; its number, images (pixels as shown) and measured rewards."""

    def newer(d):
        _error_on_page(d, "status")
        tables = _css(d, "#rewards table.miro-rewards")
        return tables[0] if tables and int(tables[0].get_attribute("data-generation")) > after else False

    table = _wait(drv, newer, 180, "no new images")
    index = int(table.get_attribute("data-generation"))
    measured = {}
    for cell in _css(drv, "#rewards td[data-image]"):
        measured.setdefault(cell.get_attribute("data-reward"), {})[int(cell.get_attribute("data-image"))] = cell.text
    images = _wait(drv, lambda d: [i for i in _css(d, "#gallery img") if i.get_attribute("src")] or False, 30)
    pixels = []
    for img in images:
        with urllib.request.urlopen(img.get_attribute("src"), timeout=30) as response:
            pixels.append(np.asarray(Image.open(io.BytesIO(response.read())).convert("RGB")))
    means = {c.get_attribute("data-reward"): c.text for c in _css(drv, "#rewards td[data-role=mean]")}
    targets = {c.get_attribute("data-reward"): c.text for c in _css(drv, "#rewards td[data-role=target]")}
    return {"index": index, "pixels": pixels, "targets": targets, "means": means,
            "measured": {k: [float(v[i]) for i in sorted(v)] for k, v in measured.items()}}  # fmt: skip


def _screenshot(drv, name: str):
    """With ``MIRO_APP_SCREENSHOTS=<folder>``: the page, from its top, as ``<folder>/<name>`` (docs/app/)."""
    folder = os.environ.get("MIRO_APP_SCREENSHOTS")
    if folder:
        drv.execute_script("window.scrollTo(0, 0);")
        time.sleep(0.5)
        Path(folder).mkdir(parents=True, exist_ok=True)
        drv.save_screenshot(str(Path(folder) / name))


def _free_rewards(drv) -> dict[str, bool]:
    """The "Free rewards" checkboxes: {reward: ticked} (gradio renders each as a label holding its input)."""
    return {label.text.strip(): label.find_element("css selector", "input").is_selected()
            for label in _css(drv, "#free label") if label.text.strip()}  # fmt: skip


def _toggle_free(drv, reward: str):
    (label,) = [x for x in _css(drv, "#free label") if x.text.strip() == reward]
    drv.execute_script("arguments[0].scrollIntoView({block: 'center'});", label)
    label.click()


def _click(drv, elem_id: str):
    (button,) = _css(drv, f"#{elem_id}")
    drv.execute_script("arguments[0].scrollIntoView({block: 'center'});", button)
    button.click()


# ----------------------------------------------------------------------------------------------- the test
def test_the_app_in_a_browser(app, driver, tmp_path):
    from selenium.webdriver.common.keys import Keys

    url, log = app
    drv = driver
    t0 = time.monotonic()

    # 1. a prompt; the reference model recommends leaving colourfulness and contrast free, so the page starts with
    # both ticked: untick contrast, its slider at 0.1, Generate: four images with their measured rewards
    _open(drv, url).send_keys(PROMPT)
    ticked = _free_rewards(drv)
    assert len(ticked) == 5 and {k for k, v in ticked.items() if v} == {"colorfulness", "contrast"}, ticked
    _toggle_free(drv, REWARD)
    _wait(drv, lambda d: not _free_rewards(d)[REWARD], 10, f"{REWARD} is still ticked free")
    _move_slider(drv, f"target-{REWARD}", Keys.HOME + Keys.ARROW_RIGHT * 10, LOW)
    _click(drv, "generate")
    low = _generation(drv, 0)
    assert len(low["pixels"]) == 4 and low["pixels"][0].shape[:2] == (192, 192)  # 32 px shown 6x
    assert low["targets"][REWARD] == "0.1" and len(low["measured"][REWARD]) == 4
    assert low["targets"]["colorfulness"] == "free"
    assert "4 images in" in _css(drv, "#status")[0].text

    # 2. the slider at 0.9, Generate again: other images, and the measured contrast rises with the slider
    _move_slider(drv, f"target-{REWARD}", Keys.END + Keys.ARROW_LEFT * 10, HIGH)
    _click(drv, "generate")
    high = _generation(drv, low["index"])
    assert high["targets"][REWARD] == "0.9"
    for k, (a, b) in enumerate(zip(low["pixels"], high["pixels"])):
        assert np.abs(a.astype(int) - b.astype(int)).mean() > 1.0, f"image {k} did not change with the slider"
    lo, hi = low["measured"][REWARD], high["measured"][REWARD]
    print(f"measured {REWARD} at target {LOW}: {lo} (mean {np.mean(lo):.4f}); at {HIGH}: {hi} (mean {np.mean(hi):.4f})")
    assert all(b > a for a, b in zip(lo, hi)), f"{REWARD} did not rise in every image: {lo} -> {hi}"
    assert np.mean(hi) - np.mean(lo) > MARGIN, f"mean {REWARD} rose by less than {MARGIN}: {lo} -> {hi}"

    _screenshot(drv, "app.png")

    # 3. the download: the images as generated and their settings as JSON, the slider's target among them
    (link,) = _css(drv, "#download a[download]")
    with urllib.request.urlopen(link.get_attribute("href"), timeout=30) as response:
        archive = zipfile.ZipFile(io.BytesIO(response.read()))
    settings = json.loads(archive.read("settings.json"))
    assert settings["prompt"] == PROMPT and settings["seeds"] == [0, 1, 2, 3]
    assert settings["settings"]["reward_targets"][REWARD] == HIGH and settings["settings"]["steps"] == 8
    assert [img["measured"][REWARD] for img in settings["images"]] == pytest.approx(hi, abs=1e-3)
    assert Image.open(archive.open("00000_s0.png")).size == (32, 32)

    # 4. an empty prompt: a message on the page, no images replaced
    _open(drv, url)
    _click(drv, "generate")
    _wait(drv, lambda d: "The prompt is empty" in _css(d, "#status")[0].text, 60, "no empty-prompt message")
    assert not _css(drv, "#rewards table.miro-rewards")

    # 5. the sweep tab: contrast over 3 targets x 2 seeds, the measured value plotted against the target
    _open(drv, url).send_keys(PROMPT)
    (tab,) = [b for b in _css(drv, "button[role=tab]") if b.text.strip() == "Sweep"]
    tab.click()
    _click(drv, "sweep")

    def swept(d):
        _error_on_page(d, "sweep-status")
        rows = _css(d, f"#sweep-summary tr[data-reward={REWARD}]")
        return rows[0] if rows and _css(d, "#sweep-plot img") else False

    row = _wait(drv, swept, 180, "no sweep result")
    rho = float(row.get_attribute("data-spearman"))
    print(f"sweep of {REWARD}: {row.text} (Spearman {rho:.3f})")
    assert rho > 0.5, f"the measured {REWARD} does not follow its target in the sweep: {row.text}"
    _screenshot(drv, "sweep.png")

    # 6. Cancel: a long generation (LONG steps, 16 images) shows its progress, stops, and frees the model
    _open(drv, url).send_keys(PROMPT)
    _move_slider(drv, "steps", Keys.END, LONG)
    _move_slider(drv, "num-images", Keys.END, 16)
    _click(drv, "generate")
    _wait(drv, lambda d: any("steps" in p.text for p in _css(d, "#gallery .progress-text")), 120, "no progress bar")
    _click(drv, "cancel")
    try:
        _wait(drv, lambda d: _css(d, "#status")[0].text.strip() == "Cancelled.", 30)
    except Exception as err:
        raise AssertionError(f"no cancel message: the status reads {_css(drv, '#status')[0].text!r}; the app's log "
                             f"ends with:\n{log.read_text()[-2000:]}") from err
    _wait(drv, lambda d: "generation cancelled after step" in log.read_text(), 60, "the job did not stop")
    stopped = [line for line in log.read_text().splitlines() if "generation cancelled after step" in line][-1]
    done, total = (int(w) for w in stopped.split("after step ")[1].split(" of "))
    assert done < total == LONG, stopped
    _move_slider(drv, "steps", Keys.HOME + Keys.ARROW_RIGHT * 3, 4)
    _move_slider(drv, "num-images", Keys.HOME + Keys.ARROW_RIGHT, 2)
    _click(drv, "generate")
    after = _generation(drv, high["index"])
    assert len(after["pixels"]) == 2
    print(f"browser checks done in {time.monotonic() - t0:.1f} s; cancelled {stopped.split('cancelled ')[1]}")
