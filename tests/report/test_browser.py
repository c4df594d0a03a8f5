"""The report as a person sees it: headless Chromium opens index.html from disk (Selenium), with no
console error and no picture that failed to load; a gallery filter and a table sort work; a
screenshot is saved (into $REPORT_SCREENSHOT_DIR, else pytest's temporary folder; its path is printed).

Needs the Debian packages chromium and chromium-driver (scripts/test.sh installs them when missing)
and selenium (the dev extra); skipped, with the reason shown, where they are absent."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium not installed (pip install -e .[dev])")
CHROMEDRIVER = shutil.which("chromedriver")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def browser():
    if not (CHROMEDRIVER and CHROMIUM):
        pytest.skip("chromium / chromium-driver not installed (apt-get install -y chromium chromium-driver)")
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,1000"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def _visible_tiles(driver) -> list:
    return [t for t in driver.find_elements("css selector", "#gallery .tile") if t.is_displayed()]


def test_report_opens_from_disk_filters_sorts_and_screenshots(
    combined_report: Path, browser, tmp_path_factory
):
    from selenium.webdriver.support.ui import Select

    page = (combined_report / "report" / "index.html").resolve()  # mammography + a nested fundus run
    browser.get(page.as_uri())
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors
    broken = browser.execute_script(
        "return Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src)"
    )
    assert broken == []
    sections = [s.get_attribute("id") for s in browser.find_elements("css selector", "section")]
    assert {"run", "data", "weak-labels", "fundus-quality", "fundus-interpret", "fundus-invariance"} <= set(
        sections
    )

    tiles = _visible_tiles(browser)
    hospitals = sorted({t.get_attribute("data-domain") for t in tiles})
    hospital = Select(browser.find_element("css selector", "select[data-filter=domain]"))
    hospital.select_by_visible_text(hospitals[-1])
    kept = _visible_tiles(browser)
    assert 0 < len(kept) < len(tiles)
    assert {t.get_attribute("data-domain") for t in kept} == {hospitals[-1]}
    assert browser.find_element("id", "gallery-count").text == f"{len(kept)} of {len(tiles)} shown"
    Select(browser.find_element("id", "gallery-sort")).select_by_value("desc")
    dice = [float(t.get_attribute("data-dice") or -1) for t in _visible_tiles(browser)]
    assert dice == sorted(dice, reverse=True)

    table = browser.find_element("css selector", "#data table.sortable")  # images per hospital and label
    header = table.find_elements("css selector", "th")[-1]  # the total column
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", header)  # not under the bar
    header.click()
    header.click()  # second click: descending

    rows = table.find_elements("css selector", "tbody tr")
    values = [float(r.find_elements("css selector", "td")[-1].text) for r in rows]
    assert values == sorted(values, reverse=True) and values[0] == max(values)

    folder = Path(os.environ.get("REPORT_SCREENSHOT_DIR") or tmp_path_factory.mktemp("screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    browser.set_window_size(1400, 2400)
    assert browser.save_screenshot(str(folder / "report.png"))
    print(f"screenshot: {folder / 'report.png'}")
    assert not [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
