"""Screenshot of the console's job page for a prompt, against a running service (docs/console.png).

    PYTHONPATH=. .venv/bin/python docs/make_console_screenshot.py --url http://127.0.0.1:8000 \
        --prompt "black short sleeve jumpsuit" --out docs/console.png
"""

from __future__ import annotations

import argparse
import shutil

from playwright.sync_api import sync_playwright

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--prompt", default="black short sleeve jumpsuit")
    parser.add_argument("--n", default="8")
    parser.add_argument("--model", default="family:cgan")
    parser.add_argument("--what", default="images+descriptions", choices=["images", "images+descriptions"],
                        help="images alone where no description model is trained yet")
    parser.add_argument("--out", default="docs/console.png")
    args = parser.parse_args()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=shutil.which("chromium"), args=ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(args.url + "/")
        page.fill("#prompt", args.prompt)
        page.select_option("#what", args.what)
        page.fill("#n", args.n)
        page.select_option("#model", args.model)
        page.click("form[data-submit] button[type=submit]")
        page.wait_for_url("**/jobs/*")
        page.wait_for_selector("#status.succeeded", timeout=300_000)
        page.evaluate("document.querySelectorAll('details').forEach(d => { if (d.closest('.item')) d.open = true })")
        page.screenshot(path=args.out, full_page=True)
        print(page.url)
        browser.close()


if __name__ == "__main__":
    main()
