"""Every lesson, opened and run in JupyterLab in headless Chromium, as a student would.

For each notebook: open it, Run > Run All Cells, wait for the kernel to go idle with every cell executed,
save, then assert that no cell shows an error (cells tagged `raises-exception` must show one), that every
ipywidgets widget rendered, and (RoPE lesson) that moving the "factor" slider redraws the plot. A screenshot
of each lesson after running goes to test-artifacts/screenshots/. How to run: tests/browser/README.md.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any

import nbformat
import pytest

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[2]
LESSON_TIMEOUT_S = float(os.environ.get("BROWSER_LESSON_TIMEOUT_S", "300"))

# Lessons with a slider to move: notebook -> description of the slider whose plot must change.
SLIDERS = {"04_rope_scaling_plots.ipynb": "factor"}
# What ipywidgets' front end shows instead of a widget it cannot display.
WIDGET_ERRORS = (
    "Error displaying widget",
    "model not found",
    "Failed to load model class",
    "Failed to create view",
)
WIDGET_VIEW_MIME = "application/vnd.jupyter.widget-view+json"
SCREENSHOT_PAGE_HEIGHT = 12_000  # px; longer notebooks are saved as several pages

# One entry per notebook cell, in order: its top-level outputs as the page shows them. An output's
# `widget_errors` are ipywidgets' error views anywhere inside it (e.g. a model class the front end
# cannot load), clicked open so their message is read (and seen in the screenshot).
_READ_CELLS_JS = """() => [...document.querySelectorAll('.jp-NotebookPanel .jp-Notebook-cell')].map(cell => ({
    outputs: [...cell.querySelectorAll(
        ':scope .jp-Cell-outputArea > .jp-OutputArea-child > .jp-OutputArea-output')].map(out => ({
        widget: out.querySelector(':scope > .jupyter-widgets') !== null,
        text: out.innerText.slice(0, 500),
        widget_errors: [...out.querySelectorAll('.jupyter-widgets-error-widget')].map(error => {
            error.parentElement.click();
            return error.parentElement.innerText.slice(0, 500);
        }),
    })),
}))"""

# The kernel is connected and idle: the toolbar's execution indicator and the status bar both say so (the
# indicator alone says "idle" before the kernel is connected, and Run All would then run nothing).
_KERNEL_IDLE_JS = """(
    document.querySelector('.jp-NotebookPanel .jp-Notebook-ExecutionIndicator')?.dataset.status === 'idle'
    && /[|] Idle\\b/.test(document.querySelector('#jp-main-statusbar')?.innerText ?? '')
)"""

# Truthy once Run All has finished: kernel idle, nothing queued ([*]) and at least one cell executed;
# or the text of a dialog that JupyterLab opened instead (e.g. no kernel could be started).
_RUN_FINISHED_JS = """() => {
    const dialog = document.querySelector('.jp-Dialog');
    if (dialog) return 'dialog: ' + dialog.innerText;
    if (!KERNEL_IDLE) return false;
    const prompts = [...document.querySelectorAll('.jp-NotebookPanel .jp-CodeCell .jp-InputPrompt')]
        .map(p => p.textContent);
    return !prompts.some(t => t.includes('*')) && prompts.some(t => /[0-9]/.test(t)) && 'done';
}""".replace("KERNEL_IDLE", _KERNEL_IDLE_JS)


def open_notebook(page: Any, lab: Any, name: str) -> None:
    """Open `name` in JupyterLab and wait until its kernel is connected and idle; hide the file browser."""
    page.goto(lab.page_url(name))
    page.wait_for_function(f"() => {_KERNEL_IDLE_JS}", timeout=LESSON_TIMEOUT_S * 1000, polling=250)
    open_sidebar_tab = page.locator(".jp-SideBar.jp-mod-left .lm-TabBar-tab.lm-mod-current")
    if open_sidebar_tab.count():  # the layout is remembered from the previous lesson
        open_sidebar_tab.click()


def run_all_cells(page: Any) -> None:
    """Run > Run All Cells, then wait for the kernel status and the cell prompts to say it is over."""
    page.get_by_role("menuitem", name="Run", exact=True).click()
    page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
    outcome = page.wait_for_function(
        _RUN_FINISHED_JS, timeout=LESSON_TIMEOUT_S * 1000, polling=250
    ).json_value()
    assert outcome == "done", f"JupyterLab opened a dialog while running the notebook: {outcome}"


def save_and_read(page: Any, lab: Any, name: str) -> nbformat.NotebookNode:
    """File > Save Notebook, wait until the tab is clean, and read back what the front end holds."""
    page.get_by_role("menuitem", name="File", exact=True).click()
    page.get_by_role("menuitem", name=re.compile(r"^Save Notebook(?! As)")).click()
    page.locator(".lm-DockPanel-tabBar .lm-TabBar-tab.lm-mod-current.jp-mod-dirty").wait_for(state="detached")
    return nbformat.read(lab.root_dir / name, as_version=4)


def wait_for_widgets(page: Any, nb: nbformat.NotebookNode) -> list[dict[str, Any]]:
    """Wait until every widget output of `nb` is drawn or replaced by an error; return the cells as shown."""
    expected = [
        (i, k)
        for i, cell in enumerate(nb.cells)
        if cell.cell_type == "code"
        for k, output in enumerate(cell.outputs)
        if WIDGET_VIEW_MIME in output.get("data", {})
    ]
    settled_js = """([expected, errors]) => {
        const cells = [...document.querySelectorAll('.jp-NotebookPanel .jp-Notebook-cell')];
        return expected.every(([i, k]) => {
            const out = cells[i]?.querySelectorAll(
                ':scope .jp-Cell-outputArea > .jp-OutputArea-child > .jp-OutputArea-output')[k];
            if (!out) return false;
            const text = out.innerText;
            return out.querySelector('.jupyter-widgets') !== null || errors.some(e => text.includes(e))
                || out.dataset.mimeType === 'text/plain';
        });
    }"""
    try:
        page.wait_for_function(settled_js, arg=[expected, list(WIDGET_ERRORS)], timeout=60_000, polling=250)
    except Exception as e:  # playwright's TimeoutError
        raise AssertionError(f"widget outputs (cell, output) {expected} still not drawn after 60 s") from e
    return page.evaluate(_READ_CELLS_JS)


def problems_in(nb: nbformat.NotebookNode, shown: list[dict[str, Any]]) -> list[str]:
    """Everything a student would see go wrong, one line per problem, naming the cell (0-based index)."""
    if len(shown) != len(nb.cells):
        return [f"the page shows {len(shown)} cells, the notebook has {len(nb.cells)}"]
    problems = []
    for i, (cell, on_page) in enumerate(zip(nb.cells, shown, strict=True)):
        if cell.cell_type != "code" or not cell.source.strip():
            continue
        errors = [o for o in cell.outputs if o.output_type == "error"]
        expects_error = "raises-exception" in cell.metadata.get("tags", [])
        first_line = cell.source.strip().splitlines()[0][:60]
        if cell.execution_count is None:
            problems.append(f"cell {i} was not executed ({first_line!r})")
        elif errors and not expects_error:
            problems.append(
                f"cell {i} shows an error: {errors[0].ename}: {errors[0].evalue} ({first_line!r})"
            )
        elif expects_error and not errors:
            problems.append(f"cell {i} is tagged raises-exception but shows no error ({first_line!r})")
        not_rendered = [
            k
            for k, output in enumerate(cell.outputs)
            if WIDGET_VIEW_MIME in output.get("data", {}) and not on_page["outputs"][k]["widget"]
        ]
        for k in not_rendered:
            text = on_page["outputs"][k]["text"].strip()[:200]
            problems.append(f"cell {i}: widget output {k} did not render; the page shows {text!r}")
        for k, output in enumerate(on_page["outputs"]):
            for message in output["widget_errors"]:
                problems.append(f"cell {i}: output {k} shows a widget error view: {message.strip()[:300]!r}")
            if k not in not_rendered and any(e in output["text"] for e in WIDGET_ERRORS):
                problems.append(
                    f"cell {i}: output {k} shows a widget error: {output['text'].strip()[:200]!r}"
                )
    return problems


def save_screenshots(page: Any, path: Path) -> list[Path]:
    """Screenshot the whole notebook: the window is made as tall as the cells (pages of 12000 px)."""
    scroller = page.locator(".jp-NotebookPanel .jp-WindowedPanel-outer")
    # Down to the last cell's bottom, not the blank space JupyterLab adds to scroll past the end.
    total = scroller.evaluate(
        """el => Math.ceil([...el.querySelectorAll('.jp-Notebook-cell')].pop().getBoundingClientRect().bottom
                          - el.getBoundingClientRect().top + el.scrollTop + 40)"""
    )
    chrome = 120  # menu bar, tab bar, toolbar and status bar around the notebook
    page.set_viewport_size({"width": 1280, "height": min(total, SCREENSHOT_PAGE_HEIGHT) + chrome})
    n_pages = math.ceil(total / SCREENSHOT_PAGE_HEIGHT)
    saved = []
    for k in range(n_pages):
        scroller.evaluate("(el, top) => { el.scrollTop = top; }", k * SCREENSHOT_PAGE_HEIGHT)
        target = path if n_pages == 1 else path.with_name(f"{path.stem}-{k + 1}{path.suffix}")
        page.screenshot(path=target)
        saved.append(target)
    return saved


def move_slider_and_check_plot(page: Any, description: str) -> Any:
    """Drag the slider labelled `description` to the right, wait for its cell's plot to change; return the
    cell."""
    label = re.compile(rf"^\s*{re.escape(description)}:?\s*$")
    slider = page.locator(".widget-slider").filter(has=page.locator(".widget-label", has_text=label))
    assert slider.count() == 1, f"expected one slider described {description!r}, found {slider.count()}"
    cell = page.locator(".jp-Notebook-cell").filter(has=slider)
    images_js = "cell => [...cell.querySelectorAll('.jp-OutputArea-output img')].map(img => img.src)"
    before = cell.evaluate(images_js)
    assert before, f"the cell with the {description!r} slider shows no plot image before the slider moves"
    readout_before = slider.locator(".widget-readout").inner_text()

    slider.scroll_into_view_if_needed()
    handle = slider.locator(".noUi-handle").bounding_box()
    track = slider.locator(".noUi-target").bounding_box()
    page.mouse.move(handle["x"] + handle["width"] / 2, handle["y"] + handle["height"] / 2)
    page.mouse.down()
    page.mouse.move(track["x"] + 0.6 * track["width"], handle["y"] + handle["height"] / 2, steps=10)
    page.mouse.up()
    readout_after = slider.locator(".widget-readout").inner_text()
    assert readout_after != readout_before, (
        f"dragging the {description!r} slider did not move it ({readout_before})"
    )

    changed_js = """([cell, before]) => {
        const now = [...cell.querySelectorAll('.jp-OutputArea-output img')].map(img => img.src);
        return now.length > 0 && JSON.stringify(now) !== JSON.stringify(before);
    }"""
    try:
        page.wait_for_function(changed_js, arg=[cell.element_handle(), before], timeout=60_000, polling=250)
    except Exception as e:  # playwright's TimeoutError
        raise AssertionError(
            f"moving {description!r} from {readout_before} to {readout_after} did not change the plot in 60 s"
        ) from e
    return cell


def test_lesson_runs_clean_in_jupyterlab(
    page: Any, lab_server: Any, notebook: Path, screenshots_dir: Path
) -> None:
    open_notebook(page, lab_server, notebook.name)
    try:
        run_all_cells(page)
        nb = save_and_read(page, lab_server, notebook.name)
        shown = wait_for_widgets(page, nb)
    finally:
        # Also on failure: the picture of what went wrong is the first thing to look at.
        save_screenshots(page, screenshots_dir / f"{notebook.stem}.png")
    problems = problems_in(nb, shown)
    assert not problems, f"{notebook.name} in JupyterLab:\n" + "\n".join(problems)
    kernels = {session["kernel"]["name"] for session in lab_server.api("GET", "sessions")}
    assert kernels == {"python3"}, f"{notebook.name} ran on kernels {kernels}, expected the project's python3"

    if notebook.name in SLIDERS:
        cell = move_slider_and_check_plot(page, SLIDERS[notebook.name])
        cell.screenshot(path=screenshots_dir / f"{notebook.stem}-slider-moved.png")


def test_every_slider_lesson_exists(lessons_dir: Path) -> None:
    """A renamed RoPE lesson must not silently drop the slider check."""
    if lessons_dir != REPO / "lessons":
        pytest.skip(f"BROWSER_LESSONS_DIR={str(lessons_dir)!r} is not the workbook's lessons/")
    missing = [name for name in SLIDERS if not (lessons_dir / name).is_file()]
    lessons = sorted(p.name for p in lessons_dir.glob("*.ipynb"))
    assert not missing, f"SLIDERS names {missing}, not in lessons/ ({lessons}): update SLIDERS in {__file__}"


def test_the_suite_sees_an_error_and_a_widget_the_front_end_cannot_draw(page: Any, lab_server: Any) -> None:
    """The checks above bite: an untagged raising cell and an unrenderable widget are both reported."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(
            "import ipywidgets, traitlets\n\n"
            "class FromTheFuture(ipywidgets.IntSlider):  # a widget version this JupyterLab cannot load\n"
            "    _model_module_version = traitlets.Unicode('99.0.0').tag(sync=True)\n\n"
            "FromTheFuture(description='n')"
        ),
        nbformat.v4.new_code_cell("1 / 0"),
    ]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    name = "zz_broken_on_purpose.ipynb"
    nbformat.write(nb, lab_server.root_dir / name)
    open_notebook(page, lab_server, name)
    run_all_cells(page)
    saved = save_and_read(page, lab_server, name)
    problems = problems_in(saved, wait_for_widgets(page, saved))
    assert any(p.startswith("cell 1 shows an error: ZeroDivisionError") for p in problems), problems
    assert any(p.startswith("cell 0:") and "widget" in p for p in problems), problems
