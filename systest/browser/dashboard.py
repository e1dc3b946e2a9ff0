"""The dashboard in a real browser (headless Chromium through chromedriver and Selenium).

Signs in, creates a campaign through the form (first with a mistake the API refuses, whose
message must show at the field), sends visits and postbacks to the edge at the URL the form
shows, then finds the campaign's row in the report, drills down into it, sorts, and looks at
it all again at a phone's size. Screenshots go to --out. The last line of stdout is JSON with
what the dashboard showed, for the caller to compare with `query report`.

    python3 dashboard.py --console URL --token TOKEN --network-token T --out DIR
"""

import argparse
import http.client
import json
import os
import sys
import time
import urllib.parse

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import Select, WebDriverWait

CAMPAIGN = "browser-test"
CAMPAIGN_NAME = "Browser test"
VISITS = 7
CONVERSIONS = 2
PHONE = "Mozilla/5.0 (iPhone; CPU iPhone OS 16_5 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148"


def browser():
    opts = webdriver.ChromeOptions()
    opts.binary_location = os.environ.get("CHROMIUM", "/usr/bin/chromium")
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
              "--window-size=1440,1000", "--hide-scrollbars", "--force-device-scale-factor=1",
              "--lang=en-US"):
        opts.add_argument(a)
    service = Service(executable_path=os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver"))
    d = webdriver.Chrome(options=opts, service=service)
    d.set_page_load_timeout(30)
    return d


def send(edge, path, headers=None):
    u = urllib.parse.urlsplit(edge)
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    c.request("GET", path, headers=headers or {})
    r = c.getresponse()
    r.read()
    c.close()
    return r


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--console", required=True)
    ap.add_argument("--token", required=True)
    ap.add_argument("--network-token", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)

    d = browser()
    wait = WebDriverWait(d, 20)
    shown = {}
    try:
        def shot(name):
            # The whole page, without the toast that says what was just done.
            d.execute_script("const t = document.getElementById('toast'); if (t) t.remove();")
            size = d.get_window_size()
            height = d.execute_script(
                "return document.documentElement.scrollHeight + window.outerHeight - window.innerHeight")
            d.set_window_size(size["width"], min(max(height, size["height"]), 4000))
            time.sleep(0.3)
            d.save_screenshot(os.path.join(args.out, name + ".png"))
            d.set_window_size(size["width"], size["height"])

        def css(sel):
            return wait.until(EC.visibility_of_element_located((By.CSS_SELECTOR, sel)))

        def text_in(sel, text):
            wait.until(EC.text_to_be_present_in_element((By.CSS_SELECTOR, sel), text))

        # Sign in: a wrong token is refused, the right one opens the reports.
        d.get(args.console + "/")
        css("#token").send_keys("not-the-token-at-all")
        css("form.signin-card button[type=submit]").click()
        text_in(".form-error", "not the one")
        shot("signin")
        field = css("#token")
        field.clear()
        field.send_keys(args.token)
        css("form.signin-card button[type=submit]").click()
        css("table#report")
        assert "Reports" in css("h1").text

        # A new campaign through the form. Without a traffic source the API refuses it and
        # the message shows at that field.
        css("nav.nav a[href='#/campaigns']").click()
        css("a[href='#/new/campaigns']").click()
        name = css("form.object-form [data-key=name] input")
        name.send_keys(CAMPAIGN_NAME)
        assert css("#object-id").get_attribute("value") == CAMPAIGN, "the id follows the name"
        offer = css("[data-key=paths] [data-key=offer] select")
        Select(offer).select_by_value("o1")
        css("#save").click()
        text_in("#form-error", "traffic_source")
        err = css(".field-error")
        assert "traffic_source" in err.text, err.text
        invalid = d.find_element(By.CSS_SELECTOR, "select.invalid")
        shot("validation")
        Select(invalid).select_by_value("ts")
        # A weight that is not a whole number is caught before it is sent.
        weight = css("[data-key=paths] .item [data-key=weight] input")
        weight.send_keys("1.5")
        css("#save").click()
        text_in(".field-error", "whole number")
        weight.clear()
        css("#save").click()

        # The saved campaign shows the URL to paste into the traffic source, with a copy button.
        url_box = css("#campaign-url")
        campaign_url = url_box.get_attribute("value")
        assert f"/c/{CAMPAIGN}?" in campaign_url, campaign_url
        copy = css("button[data-copy=campaign-url]")
        copy.click()
        wait.until(lambda _: copy.text in ("Copied", "Select and copy"))
        shown["copy_button"] = copy.text
        shot("campaign")

        # Traffic at that URL: the edge answers within seconds of the save.
        u = urllib.parse.urlsplit(campaign_url)
        edge = f"{u.scheme}://{u.netloc}"
        path = u.path + "?" + u.query.replace("{zone}", "z1").replace("{cost}", "0.05")
        deadline = time.time() + 10
        while send(edge, path, {"User-Agent": PHONE}).status != 302:
            assert time.time() < deadline, "the campaign never answered on the edge"
            time.sleep(0.1)
        clicks = []
        for i in range(VISITS - 1):
            r = send(edge, path, {"User-Agent": PHONE})
            assert r.status == 302, r.status
            loc = r.getheader("Location")
            clicks.append(urllib.parse.parse_qs(urllib.parse.urlsplit(loc).query)["sub"][0])
        for i, cid in enumerate(clicks[:CONVERSIONS]):
            r = send(edge, f"/postback?cid={cid}&txid=t{i}&network=net&token={args.network_token}")
            assert r.status == 200, r.status

        # The report over the last seven days (a run across midnight stays in it): the row
        # appears once the edge has flushed; refresh until it does.
        css("nav.nav a[href='#/report']").click()
        Select(css("#range")).select_by_value("7d")
        wait.until(EC.url_contains("from="))
        row_sel = f"table#report tbody tr[data-value='{CAMPAIGN}']"
        deadline = time.time() + 90
        while True:
            rows = d.find_elements(By.CSS_SELECTOR, row_sel)
            try:
                if rows and rows[0].find_elements(By.CSS_SELECTOR, "td")[3].text == str(CONVERSIONS):
                    break
            except StaleElementReferenceException:
                pass
            assert time.time() < deadline, "the campaign's row never showed its conversions"
            time.sleep(1)
            d.find_element(By.XPATH, "//button[text()='Refresh']").click()
            time.sleep(0.5)
        row = css(row_sel)
        cells = [c.text for c in row.find_elements(By.CSS_SELECTOR, "td")]
        shown["row"] = cells
        shown["totals"] = [c.text for c in d.find_elements(By.CSS_SELECTOR, "table#report tfoot td")]
        assert CAMPAIGN_NAME in cells[0], cells
        assert cells[1] == str(VISITS), cells
        css("#chart svg path.line")
        shot("report")

        # Sorting by a column orders the rows by it.
        d.find_element(By.XPATH, "//table[@id='report']//th//button[text()='Visits']").click()
        wait.until(EC.url_contains("sort=visits"))
        css("th[aria-sort='descending']")

        # Conversions by status, on request: both postbacks were sales.
        css("#statuses").click()
        wait.until(EC.url_contains("statuses=1"))
        cells = [c.text for c in css(row_sel).find_elements(By.CSS_SELECTOR, "td")]
        assert cells[10:12] == ["0", str(CONVERSIONS)], cells
        shown["statuses"] = cells[10:]
        css("#statuses").click()
        wait.until(lambda _: "statuses=1" not in d.current_url)

        # Drill down: the campaign's row leads to its offers, with a breadcrumb back.
        css(row_sel + " a.drill").click()
        wait.until(EC.url_contains("filter=campaign"))
        text_in("nav.crumbs", CAMPAIGN_NAME)
        css("table#report tbody tr[data-value='o1']")
        offer_cells = [c.text for c in css("table#report tbody tr[data-value='o1']").find_elements(By.CSS_SELECTOR, "td")]
        shown["drill"] = offer_cells
        assert offer_cells[1] == str(VISITS), offer_cells
        shot("drilldown")
        css("nav.crumbs a").click()
        wait.until(lambda _: "filter=" not in d.current_url)
        css(row_sel)

        # A phone: the same report, then the campaign's form.
        d.set_window_size(390, 844)
        d.refresh()
        css(row_sel)
        time.sleep(0.3)
        width = d.execute_script("return document.documentElement.scrollWidth")
        assert width <= 390, f"the page is {width}px wide on a 390px phone"
        shot("phone-report")
        d.get(args.console + f"/#/campaigns/{CAMPAIGN}")
        css("#campaign-url")
        shot("phone-campaign")

        # The log (on the phone still): the campaign's conversion reports as they came, then
        # its visits.
        d.get(args.console + f"/#/log/conversions?campaign={CAMPAIGN}")
        text_in("nav.nav a.active", "Log")
        log_rows = "table#log tbody tr"
        wait.until(lambda _: len(d.find_elements(By.CSS_SELECTOR, log_rows)) == CONVERSIONS)
        logged = {r.find_elements(By.CSS_SELECTOR, "td")[11].text for r in d.find_elements(By.CSS_SELECTOR, log_rows)}
        assert logged == set(clicks[:CONVERSIONS]), (logged, clicks[:CONVERSIONS])
        shot("log-conversions")
        css("a[href='#/log/clicks?campaign=" + CAMPAIGN + "']").click()
        wait.until(lambda _: len(d.find_elements(By.CSS_SELECTOR, log_rows)) == VISITS)
        shown["log_visits"] = len(d.find_elements(By.CSS_SELECTOR, log_rows))
    except (AssertionError, TimeoutException):
        shot_path = os.path.join(args.out, "failure.png")
        d.save_screenshot(shot_path)
        print(f"failed at {d.current_url}; screenshot {shot_path}", file=sys.stderr)
        for entry in d.get_log("browser") if hasattr(d, "get_log") else []:
            print("browser:", entry, file=sys.stderr)
        raise
    finally:
        d.quit()
    print(json.dumps(shown))


if __name__ == "__main__":
    main()
