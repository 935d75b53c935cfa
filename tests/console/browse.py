"""Drives `stint audit console` in headless Chromium as an auditor would,
and says what a person sees. Run by tests/it/console.rs with:
  browse.py BASE_URL SCREENSHOT_DIR MODE
MODE `look`: overview, a filter, a record, a verification (intact).
MODE `tampered`: a verification that must name the broken record.
Prints one JSON object; exits non-zero with a message on any failure.
"""
import json
import os
import sys

from playwright.sync_api import sync_playwright

base, shots, mode = sys.argv[1], sys.argv[2], sys.argv[3]
os.makedirs(shots, exist_ok=True)
chromium = os.environ.get("STINT_CHROMIUM", "/usr/bin/chromium")
seen = {}
problems = []

with sync_playwright() as p:
    browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    # A CSP violation or a failed asset shows up here.
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type in ("error", "warning") else None)
    page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url}"))

    if mode == "look":
        page.goto(base + "/")
        seen["overview_title"] = page.title()
        seen["cards"] = {c.inner_text().split("\n")[1]: int(c.inner_text().split("\n")[0]) for c in page.query_selector_all(".card")}
        seen["chart_bars"] = len(page.query_selector_all(".chart svg rect"))
        seen["grants"] = [r.inner_text() for r in page.query_selector_all("table:nth-of-type(1) tbody tr td:first-child")]
        page.screenshot(path=f"{shots}/overview.png", full_page=True)

        page.click("nav >> text=Records")
        page.select_option("select[name=outcome]", "denied")
        page.fill("input[name=reason]", "claims_mismatch")
        page.click("button:has-text('Apply')")
        page.wait_for_load_state()
        seen["filtered_url"] = page.url
        seen["filtered_outcomes"] = sorted({b.inner_text() for b in page.query_selector_all("tbody .outcome")})
        seen["filtered_rows"] = len(page.query_selector_all("tbody tr"))
        page.screenshot(path=f"{shots}/records-denied.png", full_page=True)

        page.click("tbody tr:first-child td:first-child a")
        page.wait_for_load_state()
        seen["record_heading"] = page.inner_text("h1")
        seen["record_reason"] = page.inner_text("dl.record dd:nth-of-type(3)")
        page.screenshot(path=f"{shots}/record.png", full_page=True)

    if mode != "look":
        page.goto(base + "/")
    page.click("nav >> text=Integrity")
    page.click("button:has-text('Verify the whole chain')")
    page.wait_for_selector("text=/Intact\\.|Broken\\./", timeout=30000)
    seen["integrity"] = page.inner_text(".notice")
    broken_link = page.query_selector(".notice a")
    seen["broken_link"] = broken_link.get_attribute("href") if broken_link else None
    page.screenshot(path=f"{shots}/integrity-{mode}.png", full_page=True)
    browser.close()

seen["problems"] = problems
print(json.dumps(seen))
