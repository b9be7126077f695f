"""The web page in a real headless Chromium: type a question, see the right page first,
open it with its heatmap, upload a PDF and watch the progress bar."""

from __future__ import annotations

import os
import shutil

import pytest

from agree_core.index import PageIndex
from conftest import copy_index, make_pdf
from serve.browser import Browser, find_chromium
from serve.servers import serve_in_thread

QUESTION = "Which solar site produced the most electricity?"


@pytest.fixture
def browser(tmp_path):
    executable = find_chromium()
    if executable is None:
        pytest.skip("chromium is not installed and could not be (`make test` installs it as root "
                    "with apt-get install -y chromium)")
    b = Browser(executable, tmp_path / "profile")
    yield b
    b.close()


def test_search_page_in_chromium(browser, tmp_path, sample_index):
    with PageIndex.open(sample_index, create=False) as local:
        expected = local.search(QUESTION, 1)[0]
    index = copy_index(sample_index, tmp_path / "index")
    with serve_in_thread(index) as url:
        browser.call("Page.enable")
        browser.call("Page.navigate", url=url + "/")
        browser.wait("document.getElementById('summary').textContent.includes('9 pages')")
        assert browser.js("document.getElementById('doc').options.length") == 4  # all + 3 files

        browser.type_text("#q", QUESTION)
        browser.press_enter()
        browser.wait("document.querySelectorAll('#results .hit').length > 0")
        first = browser.js("(() => { const h = document.querySelector('#results .hit'); "
                           "return [h.dataset.source, Number(h.dataset.page), h.dataset.rank]; })()")
        assert first == [expected.source, expected.page, "1"]
        browser.wait("[...document.querySelectorAll('#results .hit img')]"
                     ".every(i => i.complete && i.naturalWidth > 0)")  # heatmap thumbnails
        assert "pages in" in browser.js("document.getElementById('status').textContent")
        browser.screenshot(tmp_path / "search.png")
        if os.environ.get("AGREE_SCREENSHOT"):  # docs/serve-page.png is made this way
            shutil.copy(tmp_path / "search.png", os.environ["AGREE_SCREENSHOT"])

        browser.js("document.querySelector('#results .hit').click()")
        browser.wait("!document.getElementById('viewer').hidden && "
                     "document.getElementById('viewer-image').naturalWidth > 0")
        evidence = browser.wait("(t => t.startsWith('score') && t)"
                                "(document.getElementById('viewer-evidence').textContent)")
        assert f"score {expected.score:.2f}" in evidence
        browser.js("document.getElementById('close').click()")

        # the document filter: only the chosen file's pages
        slides = [o for o in browser.js("[...document.getElementById('doc').options].map(o => o.value)")
                  if o.endswith("slides.pdf")][0]
        browser.js(f"document.getElementById('doc').value = {slides!r}; "
                   "document.querySelector('#search button').click()")
        browser.wait(f"[...document.querySelectorAll('#results .hit')].length > 0 && "
                     f"[...document.querySelectorAll('#results .hit')].every(h => h.dataset.source === {slides!r})")

        pdf = make_pdf(tmp_path / "penguins.pdf", ["penguin colony counts", "penguin diets"])
        browser.set_files("#files", [str(pdf)])
        browser.js("document.querySelector('#upload button').click()")
        status = browser.wait("(t => t.startsWith('done') && t)(document.getElementById('job-status').textContent)")
        assert "2 / 2 pages" in status
        assert browser.js("document.getElementById('progress').value") == 2
        browser.wait("document.getElementById('summary').textContent.includes('11 pages')")
