"""Drives the status page of a running adclick in headless Chromium (Selenium)
and checks what a person sees against the REST API. Run by tests/page.rs,
which starts nats-server, adclick and the load generator first.

    python3 tests/page/check_page.py BASE_URL SCREENSHOT_DIR PARTITIONS

Environment: ADCLICK_CHROMIUM, ADCLICK_CHROMEDRIVER (the binaries),
PYTHONPATH with Selenium. Exit status 0 when every check holds; otherwise 1,
with the failed check on stderr. Screenshots are left in SCREENSHOT_DIR.
"""

import json
import os
import sys
import tempfile
import time
import urllib.request

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys


class CheckFailed(Exception):
    pass


def rest(base, path):
    with urllib.request.urlopen(base + path, timeout=10) as r:
        return json.loads(r.read())


def eventually(what, check, within=60.0):
    """Retries `check` until it returns a true value; fails naming `what`."""
    deadline = time.monotonic() + within
    last = None
    while time.monotonic() < deadline:
        try:
            got = check()
            if got:
                return got
        except (CheckFailed, WebDriverException) as e:
            # Not drawn yet, or redrawn between finding and reading it
            # (no such element, stale element): read again.
            last = e
        time.sleep(0.25)
    raise CheckFailed(f"{what} (within {within:.0f} s){': ' + str(last) if last else ''}")


def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = os.environ["ADCLICK_CHROMIUM"]
    # The flags the machine needs: no sandbox as root, and no background
    # connections to hosts this closed network refuses.
    for flag in [
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
        "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
        "--window-size=1366,1050",
        f"--user-data-dir={tempfile.mkdtemp(prefix='adclick-page-')}",
    ]:
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(os.environ["ADCLICK_CHROMEDRIVER"]), options=options)


def shown_top(driver):
    """The window, its end and the ranked (ad, count) rows the page shows,
    read in one script so a re-render cannot interleave."""
    table = driver.execute_script("""
        const t = document.getElementById("top");
        return {
          window: t.dataset.window, to: t.dataset.to,
          rows: [...t.querySelectorAll("tbody tr[data-ad]")].map((r) => ({
            ad: r.dataset.ad, held: r.dataset.count,
            shown: r.querySelector("td.count").textContent })),
        };""")
    ranked = []
    for row in table["rows"]:
        shown = row["shown"].replace(",", "")
        if shown != row["held"]:
            raise CheckFailed(f"row {row['ad']} shows {shown}, holds {row['held']}")
        ranked.append((row["ad"], int(shown)))
    return table["window"], table["to"], ranked


def click_ad(driver, ad):
    """Selects an ad of the top table (the table is redrawn every second,
    so the button is found and pressed in one script)."""
    driver.execute_script(
        "document.querySelector(`#top tr[data-ad=\"${arguments[0]}\"] button.ad`).click()", ad)


def main():
    base, shots, partitions = sys.argv[1], sys.argv[2], int(sys.argv[3])
    os.makedirs(shots, exist_ok=True)
    driver = browser()
    report = {}
    try:
        driver.get(base + "/")
        eventually("the page says ready", lambda: driver.find_element(By.ID, "ready").text == "ready")
        eventually("the live stream is connected",
                   lambda: driver.find_element(By.ID, "connection").text == "live")

        # Partitions: one row each, all consuming.
        states = driver.execute_script(
            'return [...document.querySelectorAll("#partitions tbody tr")].map((r) => r.cells[2].textContent)')
        if len(states) != partitions or any(s != "consuming" for s in states):
            raise CheckFailed(f"partition rows {states}, want {partitions} consuming")

        # Keyboard: the 5-minute tab, reached and pressed with keys alone.
        tab = driver.find_element(By.CSS_SELECTOR, '#tabs button[data-window="5"]')
        tab.send_keys(Keys.ENTER)
        eventually("the 5-minute window is selected",
                   lambda: tab.get_attribute("aria-selected") == "true"
                   and driver.find_element(By.ID, "top").get_attribute("data-window") == "5")

        # The top ads shown equal the REST answer for the same window and end.
        def top_agrees():
            window, to, ranked = shown_top(driver)
            if not ranked:
                raise CheckFailed("no ads shown yet")
            answer = rest(base, f"/v1/ads/popular?window={window}&count=10&at={to}")
            want = [(a["ad_id"], a["count"]) for a in answer["ads"]]
            if ranked != want:
                raise CheckFailed(f"page {ranked} != REST {want} (window {window}, at {to})")
            return ranked
        ranked = eventually("the page's top ads equal GET /v1/ads/popular", top_agrees)
        report["top"] = ranked[0]
        driver.save_screenshot(os.path.join(shots, "page.png"))

        # The numbers move: the consumed total grows while the generator runs,
        # and a rate is shown.
        before = driver.find_element(By.ID, "total-consumed").text
        eventually("the consumed total moves",
                   lambda: driver.find_element(By.ID, "total-consumed").text not in ("", before))
        rate = driver.find_element(By.ID, "rate-consumed").text
        if not rate.replace(",", "").isdigit():
            raise CheckFailed(f"consumed rate shows {rate!r}")
        report["consumed_before"] = before
        report["consumed_after"] = driver.find_element(By.ID, "total-consumed").text

        # Selecting the top ad draws its last hour; the caption's total is
        # the series the API gives.
        top_ad = ranked[0][0]
        click_ad(driver, top_ad)

        def sparkline_agrees():
            caption = driver.find_element(By.ID, "spark-caption").text
            series = rest(base, f"/v1/ads/{top_ad}/series?minutes=60")
            total = sum(m["count"] for m in series["minutes"])
            if not caption.startswith(f"{top_ad}: {total:,} clicks"):
                # The hour may have moved on between the two reads: select again.
                click_ad(driver, top_ad)
                raise CheckFailed(f"caption {caption!r}, series total {total}")
            return caption
        report["sparkline"] = eventually("the sparkline's total equals GET /v1/ads/{ad}/series", sparkline_agrees, 30)
        if not driver.find_elements(By.CSS_SELECTOR, "#spark svg polyline"):
            raise CheckFailed("no sparkline drawn")
        driver.save_screenshot(os.path.join(shots, "page-sparkline.png"))
    except CheckFailed as e:
        driver.save_screenshot(os.path.join(shots, "page-failed.png"))
        print(f"page check failed: {e}", file=sys.stderr)
        return 1
    finally:
        driver.quit()
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
