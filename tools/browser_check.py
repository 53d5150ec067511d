"""`make browser-check`: the notebooks as a person sees them, in a real JupyterLab and browser.

Starts JupyterLab headless on a free local port, drives it with Playwright through Debian's
`chromium` (Playwright's own browser download does not work on these machines), and checks on
copies of the smoke run's executed notebooks (runs/<profile>/, made by `make reproduce`):

  05_explore        Run All; no cell fails; the figure cells show rendered images; the explorer
                    shows its images and caption; moving the query slider redraws the score curve
                    (its pixels change), so do switching the strategy and typing a query id; the
                    explorer's output does not grow.
  02_mine_negatives opened as executed: every figure cell shows a rendered image.
  07_drop_lab       (needs no run: the notebook itself) Run All; no cell fails; figures 14 and 15
                    and the lab panel show images; moving the cliff slider redraws the lab's curve
                    (its pixels change) and its caption names the new r; the lab's output does not
                    grow; saved from JupyterLab, the notebook exports to reveal.js slides (sections
                    holding the figures) with `jupyter nbconvert --to slides`.

`--only drop_lab` (or explore, mine_negatives) runs one check. Screenshots go to runs/<profile>/screenshots/. Exit status 0 only when every check passed; when the
browser cannot be installed it says so in one line and exits 2.

    python tools/browser_check.py [--profile smoke] [--timeout 600] [--only drop_lab]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
VIEWPORT = {"width": 1400, "height": 1000}
# JupyterLab settings of the throwaway profile: every cell stays in the DOM (no windowing), nothing
# is saved back (the notebooks are copies anyway), no news or update checks (no network here).
LAB_SETTINGS = {
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    "@jupyterlab/docmanager-extension/plugin.jupyterlab-settings": {"autosave": False},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false",
                                                                         "checkForUpdates": False},
}


class CheckFailed(AssertionError):
    """A check of what the page shows failed; the message says which and what was seen."""


def log(message: str) -> None:
    print(f"browser-check: {message}", flush=True)


def ok(passed: list, message: str) -> None:
    """One check passed: count it and say what was seen."""
    passed.append(message)
    log(f"ok: {message}")


# ----------------------------------------------------------------------------- what it needs
def ensure_chromium() -> tuple[Path | None, str]:
    """(/usr/bin/chromium, '') installed with apt-get when missing (as root), or (None, why not)."""
    if CHROMIUM.exists():
        return CHROMIUM, ""
    if shutil.which("apt-get") is None:
        return None, "no apt-get"
    if os.geteuid() != 0:
        return None, "apt-get install needs root (run `sudo apt-get install -y chromium` once)"
    log("installing Debian's chromium (apt-get install -y chromium)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    why = ""
    for update in (False, True):  # a missing or stale package list needs an update first
        if update:
            subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True)
        done = subprocess.run(["apt-get", "install", "-y", "-q", "chromium"], env=env, capture_output=True,
                              text=True)
        if CHROMIUM.exists():
            return CHROMIUM, ""
        why = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
    return None, f"apt-get install chromium failed: {why}"


def ensure_playwright() -> bool:
    """Playwright's Python package (and JupyterLab) in this interpreter, from the `browser` extra."""
    try:
        import jupyterlab  # noqa: F401
        import playwright  # noqa: F401
        return True
    except ImportError:
        log("installing the 'browser' extra (jupyterlab, playwright) into this environment")
        done = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-e", f"{ROOT}[browser]"])
        return done.returncode == 0


# ----------------------------------------------------------------------------- JupyterLab
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_lab(root_dir: Path, home: Path, port: int, token: str) -> subprocess.Popen:
    """JupyterLab serving `root_dir` on 127.0.0.1:port, with config, runtime and settings under `home`."""
    settings = home / "lab-settings"
    for name, value in LAB_SETTINGS.items():
        (settings / name).parent.mkdir(parents=True, exist_ok=True)
        (settings / name).write_text(json.dumps(value))
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1", f"--port={port}",
           "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root_dir}",
           f"--LabApp.user_settings_dir={settings}", f"--LabApp.workspaces_dir={home / 'workspaces'}",
           "--LabApp.expose_app_in_browser=True"]
    if os.geteuid() == 0:
        cmd.append("--allow-root")  # Jupyter refuses root without it (most containers run as root)
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(home / "config"), "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
           "IPYTHONDIR": str(home / "ipython")}
    logfile = open(home / "lab.log", "w")
    proc = subprocess.Popen(cmd, cwd=root_dir, env=env, stdout=logfile, stderr=subprocess.STDOUT,
                            start_new_session=True)
    deadline = time.time() + 90
    while time.time() < deadline:
        if proc.poll() is not None:
            raise CheckFailed(f"JupyterLab exited at start:\n{(home / 'lab.log').read_text()[-2000:]}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status?token={token}", timeout=2)
            return proc
        except OSError:
            time.sleep(0.5)
    stop_lab(proc)
    raise CheckFailed(f"JupyterLab did not answer in 90 s:\n{(home / 'lab.log').read_text()[-2000:]}")


def stop_lab(proc: subprocess.Popen) -> None:
    """SIGTERM to the server (it shuts its kernels down), SIGKILL if it lingers."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# ----------------------------------------------------------------------------- page helpers
# the notebook panel showing `path` (restored tabs of an earlier page may be open beside it)
JS_PANEL = """(path) => Array.from(window.jupyterapp.shell.widgets('main')).find(
  (w) => w.context && w.context.path === path)"""

JS_CELLS = """(path) => {
  const panel = (""" + JS_PANEL + """)(path);
  return panel.content.widgets.map((cell) => {
    const m = cell.model;
    const outputs = m.type === 'code' ? m.outputs.toJSON() : [];
    return {type: m.type, source: m.sharedModel.getSource(),
            errors: outputs.filter((o) => o.output_type === 'error').map((o) => o.ename + ': ' + o.evalue),
            text: outputs.map((o) => JSON.stringify(o.data ? o.data['text/plain'] || '' : '')).join('\\n'),
            images: Array.from(cell.node.querySelectorAll('.jp-OutputArea-output img'))
                        .filter((img) => img.complete && img.naturalWidth > 0)
                        .map((img) => [img.naturalWidth, img.naturalHeight]),
            outputs: cell.node.querySelectorAll('.jp-OutputArea-output').length};
  });
}"""

JS_READY = """async (path) => {
  if (!window.jupyterapp) return false;
  const panel = (""" + JS_PANEL + """)(path);
  if (!panel || !panel.sessionContext) return false;
  await panel.context.ready;
  await panel.sessionContext.ready;
  return true;
}"""

JS_RUN_ALL = """async (path) => {
  const app = window.jupyterapp;
  app.shell.activateById((""" + JS_PANEL + """)(path).id);
  await app.commands.execute('notebook:clear-all-cell-outputs');
  window.__runAllDone = undefined;
  app.commands.execute('notebook:run-all-cells').then((ok) => { window.__runAllDone = ok; },
                                                      (err) => { window.__runAllDone = String(err); });
}"""


def open_notebook(page, port: int, token: str, name: str, shots: Path, timeout_s: float) -> None:
    page.goto(f"http://127.0.0.1:{port}/lab/tree/{name}?reset&token={token}")  # reset: no restored tabs
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=timeout_s * 1000)
    deadline = time.time() + timeout_s
    while not page.evaluate(JS_READY, name):
        if time.time() > deadline:
            page.screenshot(path=str(shots / f"{Path(name).stem}_not_ready.png"))
            raise CheckFailed(f"{name}: JupyterLab did not open the notebook and its kernel")
        time.sleep(0.5)


def wait_until(page, predicate, timeout_s: float, what: str, shot: Path | None = None):
    deadline = time.time() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.time() > deadline:
            if shot is not None:
                page.screenshot(path=str(shot))
            raise CheckFailed(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.5)


def cell_locator(page, index: int):
    """The index-th cell of the notebook in view (the current tab)."""
    return page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook .jp-Cell").nth(index)


def figure_cells(cells: list[dict], markers: tuple[str, ...]) -> list[int]:
    return [i for i, c in enumerate(cells) if c["type"] == "code" and any(m in c["source"] for m in markers)]


def check_images(name: str, cells: list[dict], indices: list[int], at_least: dict | None = None) -> None:
    """Every given cell shows >= 1 loaded image (>= at_least[i] for some), and no figure as text."""
    for i in indices:
        want = (at_least or {}).get(i, 1)
        if len(cells[i]["images"]) < want:
            shown = "<Figure" in cells[i]["text"] and "a figure's text repr <Figure ...>" or "no image"
            raise CheckFailed(f"{name}: cell {i} ({cells[i]['source'].splitlines()[0][:60]!r}) shows {shown}, "
                              f"{len(cells[i]['images'])} rendered image(s) where {want} are expected")


def screenshot_cell(page, index: int, path: Path) -> None:
    cell = cell_locator(page, index)
    cell.scroll_into_view_if_needed()
    cell.screenshot(path=str(path))


# ----------------------------------------------------------------------------- the two notebooks
def check_explore(page, port, token, shots: Path, timeout_s: float, passed: list) -> None:
    """05: Run All, images everywhere, and the explorer redraws when its widgets move."""
    name = "05_explore.ipynb"
    open_notebook(page, port, token, name, shots, timeout_s)
    t0 = time.time()
    page.evaluate(JS_RUN_ALL, name)
    wait_until(page, lambda: page.evaluate("() => window.__runAllDone") is not None, timeout_s,
               "Run All of 05_explore", shots / "05_run_all_timeout.png")
    cells = page.evaluate(JS_CELLS, name)
    errors = [e for c in cells for e in c["errors"]]
    if errors or page.evaluate("() => window.__runAllDone") is not True:
        page.screenshot(path=str(shots / "05_error.png"))
        raise CheckFailed(f"{name}: Run All failed: {errors or page.evaluate('() => window.__runAllDone')}")
    ok(passed, f"{name}: Run All done in {time.time() - t0:.0f} s, no cell failed")

    static = figure_cells(cells, ("query_figure(",))
    panel = figure_cells(cells, ("explorer(",))
    if not static or not panel:
        raise CheckFailed(f"{name}: no query_figure / explorer cell found")
    def images_shown():
        shown = page.evaluate(JS_CELLS, name)
        return all(len(shown[i]["images"]) >= 2 for i in static + panel)
    try:
        wait_until(page, images_shown, 30, "rendered images in 05")
    except CheckFailed:
        page.screenshot(path=str(shots / "05_no_images.png"))  # check_images below says which cell
    cells = page.evaluate(JS_CELLS, name)
    check_images(name, cells, static + panel, at_least={i: 2 for i in static + panel})
    screenshot_cell(page, static[0], shots / "05_static_figure.png")
    ok(passed, f"{name}: static figure and explorer show images "
               f"{[cells[i]['images'] for i in static + panel]}")

    explorer = cell_locator(page, panel[0])
    images = explorer.locator(".widget-image")
    caption = explorer.locator(".widget-html")
    explorer.scroll_into_view_if_needed()
    page.wait_for_timeout(500)
    explorer.screenshot(path=str(shots / "05_explorer.png"))
    n_outputs = cells[panel[0]]["outputs"]
    before = caption.inner_text(), digest(images.nth(1))

    # 1. drag the query slider's handle to the right, as a person would
    handle = explorer.locator(".noUi-handle").first
    box = handle.bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.down()
    page.mouse.move(box["x"] + 120, box["y"] + box["height"] / 2, steps=8)
    page.mouse.up()
    after = redrawn(page, caption, images.nth(1), before, "moving the query slider", shots)
    explorer.screenshot(path=str(shots / "05_explorer_slider_moved.png"))
    ok(passed, f"{name}: slider moved, curve redrawn: {before[0]!r} -> {after[0]!r}")

    # 2. switch the strategy
    explorer.locator("select").first.select_option("top_k-k20")
    after2 = redrawn(page, caption, images.nth(1), after, "switching the strategy to top_k", shots)
    if "top_k" not in after2[0]:
        raise CheckFailed(f"{name}: the caption does not name the new strategy: {after2[0]!r}")
    explorer.screenshot(path=str(shots / "05_explorer_top_k.png"))
    ok(passed, f"{name}: strategy switched, curve redrawn: {after2[0]!r}")

    # 3. jump to a query by id (the third id the box offers)
    ids = explorer.locator("datalist option").evaluate_all("(os) => os.map((o) => o.value)")
    box_input = explorer.locator(".widget-combobox input, input[list]").first
    box_input.fill(ids[2])
    box_input.press("Enter")
    after3 = redrawn(page, caption, images.nth(1), after2, f"typing the query id {ids[2]}", shots)
    if ids[2] not in after3[0]:
        raise CheckFailed(f"{name}: jumped to {ids[2]!r} but the caption says {after3[0]!r}")
    explorer.screenshot(path=str(shots / "05_explorer_jump.png"))
    ok(passed, f"{name}: jumped to query id {ids[2]!r}, curve redrawn: {after3[0]!r}")

    cells = page.evaluate(JS_CELLS, name)
    if cells[panel[0]]["outputs"] != n_outputs:
        raise CheckFailed(f"{name}: the explorer's output grew from {n_outputs} to {cells[panel[0]]['outputs']}")
    if cells[panel[0]]["errors"] or explorer.locator(".jp-RenderedText[data-mime-type*='stderr']").count():
        raise CheckFailed(f"{name}: the explorer printed an error: {explorer.inner_text()[-800:]}")
    ok(passed, f"{name}: the explorer's output stayed at {n_outputs} output(s), no error")


def digest(locator) -> str:
    """Hash of the pixels the element shows (an element screenshot), '' while it is not loaded."""
    loaded = locator.evaluate("(img) => img.complete && img.naturalWidth > 0")
    return hashlib.sha256(locator.screenshot()).hexdigest() if loaded else ""


def redrawn(page, caption, curve, before: tuple[str, str], what: str, shots: Path) -> tuple[str, str]:
    """Wait until the caption changed and the curve image shows other pixels than `before`."""
    def changed():
        text = caption.inner_text()
        if text == before[0]:
            return None
        page.wait_for_timeout(300)  # the image bytes follow the caption's in the same redraw
        pixels = digest(curve)
        return (text, pixels) if pixels and pixels != before[1] else None
    return wait_until(page, changed, 60, f"the explorer to redraw after {what}",
                      shots / "05_explorer_not_redrawn.png")


def check_mine_negatives(page, port, token, shots: Path, timeout_s: float, passed: list) -> None:
    """02 as executed by papermill: its figure cells show images."""
    name = "02_mine_negatives.ipynb"
    open_notebook(page, port, token, name, shots, timeout_s)
    cells = page.evaluate(JS_CELLS, name)
    figs = figure_cells(cells, ("plot_",))
    if not figs:
        raise CheckFailed(f"{name}: no figure cell (a call of plots.plot_*) found")
    try:
        wait_until(page, lambda: all(page.evaluate(JS_CELLS, name)[i]["images"] for i in figs), 20,
                   "rendered images in 02")
    except CheckFailed:
        pass  # check_images below says which cell shows what
    cells = page.evaluate(JS_CELLS, name)
    for n, i in enumerate(figs):
        screenshot_cell(page, i, shots / f"02_figure_{n + 1}.png")
    check_images(name, cells, figs)
    ok(passed, f"{name}: {len(figs)} figure cells show images {[cells[i]['images'] for i in figs]}")


def check_drop_lab(page, port, token, shots: Path, timeout_s: float, passed: list) -> None:
    """07: Run All, images everywhere, the lab redraws when its cliff slider moves, and the notebook
    saved from JupyterLab exports to reveal.js slides."""
    name = "07_drop_lab.ipynb"
    open_notebook(page, port, token, name, shots, timeout_s)
    t0 = time.time()
    page.evaluate(JS_RUN_ALL, name)
    wait_until(page, lambda: page.evaluate("() => window.__runAllDone") is not None, timeout_s,
               "Run All of 07_drop_lab", shots / "07_run_all_timeout.png")
    cells = page.evaluate(JS_CELLS, name)
    errors = [e for c in cells for e in c["errors"]]
    if errors or page.evaluate("() => window.__runAllDone") is not True:
        page.screenshot(path=str(shots / "07_error.png"))
        raise CheckFailed(f"{name}: Run All failed: {errors or page.evaluate('() => window.__runAllDone')}")
    ok(passed, f"{name}: Run All done in {time.time() - t0:.0f} s, no cell failed")

    static = figure_cells(cells, ("lab_figure(", "plot_smoothness_sweep("))
    panel = figure_cells(cells, ("drop_explorer(",))
    if len(static) != 2 or not panel:
        raise CheckFailed(f"{name}: expected the lab_figure and plot_smoothness_sweep cells and the drop_explorer "
                          f"cell; found {static} and {panel}")
    try:
        wait_until(page, lambda: all(page.evaluate(JS_CELLS, name)[i]["images"] for i in static + panel), 30,
                   "rendered images in 07")
    except CheckFailed:
        page.screenshot(path=str(shots / "07_no_images.png"))  # check_images below says which cell
    cells = page.evaluate(JS_CELLS, name)
    check_images(name, cells, static + panel)
    for i, slug in zip(static, ("lab_figure", "sweep_figure")):
        screenshot_cell(page, i, shots / f"07_{slug}.png")
    ok(passed, f"{name}: figures 14, 15 and the lab show images {[cells[i]['images'] for i in static + panel]}")

    lab = cell_locator(page, panel[0])
    image, caption = lab.locator(".widget-image").first, lab.locator(".widget-html").first
    lab.scroll_into_view_if_needed()
    page.wait_for_timeout(500)
    lab.screenshot(path=str(shots / "07_lab.png"))
    n_outputs = cells[panel[0]]["outputs"]
    before = caption.inner_text(), digest(image)
    handle = lab.locator(".noUi-handle").nth(2)  # the third slider: cliff / gap (r), a log slider
    box = handle.bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.down()
    page.mouse.move(box["x"] - 70, box["y"] + box["height"] / 2, steps=8)
    page.mouse.up()
    after = redrawn(page, caption, image, before, "moving the cliff slider", shots)
    if after[0].split("(")[0] == before[0].split("(")[0]:
        raise CheckFailed(f"{name}: the caption still names the old r: {after[0]!r}")
    lab.screenshot(path=str(shots / "07_lab_slider_moved.png"))
    ok(passed, f"{name}: cliff slider moved, curve redrawn: {before[0]!r} -> {after[0]!r}")
    cells = page.evaluate(JS_CELLS, name)
    if cells[panel[0]]["outputs"] != n_outputs or cells[panel[0]]["errors"] \
            or lab.locator(".jp-RenderedText[data-mime-type*='stderr']").count():
        raise CheckFailed(f"{name}: the lab's output grew or printed an error: {lab.inner_text()[-800:]}")
    ok(passed, f"{name}: the lab's output stayed at {n_outputs} output(s), no error")
    check_slides(page, name, shots, passed)


JS_SAVE = """async (path) => {
  const app = window.jupyterapp;
  app.shell.activateById((""" + JS_PANEL + """)(path).id);
  await app.commands.execute('docmanager:save');
}"""


def check_slides(page, name: str, shots: Path, passed: list) -> None:
    """Save the notebook as run in JupyterLab, export it with `jupyter nbconvert --to slides
    --no-input` beside it, and check the deck: reveal.js sections, the figures as embedded PNGs."""
    work = shots.parent / "browser-check"
    page.evaluate(JS_SAVE, name)
    saved = json.loads((work / name).read_text())
    if not any(o.get("data", {}).get("image/png") for c in saved["cells"] for o in c.get("outputs", [])):
        raise CheckFailed(f"{name}: the notebook saved from JupyterLab holds no figure")
    done = subprocess.run([sys.executable, "-m", "jupyter", "nbconvert", "--to", "slides", "--no-input",
                           "--output-dir", str(shots), str(work / name)], capture_output=True, text=True)
    deck = shots / name.replace(".ipynb", ".slides.html")
    if done.returncode != 0 or not deck.is_file():
        raise CheckFailed(f"{name}: nbconvert --to slides failed: {done.stderr.strip()[-800:]}")
    html = deck.read_text()
    sections, figures = html.count("<section"), html.count("data:image/png;base64,")
    if sections < 6 or figures < 2 or "reveal" not in html:
        raise CheckFailed(f"{name}: the slides hold {sections} sections and {figures} figures (expected >= 6 and >= 2)")
    ok(passed, f"{name}: reveal.js slides {deck.relative_to(ROOT)} ({sections} sections, {figures} figures, "
               f"{len(html) // 1024} KiB)")


# ----------------------------------------------------------------------------- main
# name -> (check, notebook, whether it is the executed copy of a run of the chain)
CHECKS = {"explore": (check_explore, "05_explore.ipynb", True),
          "mine_negatives": (check_mine_negatives, "02_mine_negatives.ipynb", True),
          "drop_lab": (check_drop_lab, "07_drop_lab.ipynb", False)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="smoke", help="run profile whose executed notebooks are checked")
    ap.add_argument("--timeout", type=float, default=600, help="seconds allowed for Run All of 05")
    ap.add_argument("--only", choices=tuple(CHECKS), action="append",
                    help="run only this check (repeatable); default: all")
    args = ap.parse_args(argv)
    chosen = {c: CHECKS[c] for c in (args.only or CHECKS)}
    run_dir = ROOT / "runs" / args.profile
    missing = [n for _, n, executed in chosen.values() if executed and not (run_dir / n).is_file()]
    if missing:
        log(f"{missing} missing in {run_dir}: run `make reproduce PROFILE={args.profile}` first")
        return 1
    chromium, why = ensure_chromium()
    if chromium is None:
        log(f"cannot install a browser on this machine ({CHROMIUM} missing; {why}): the check cannot run")
        return 2
    if not ensure_playwright():
        log("cannot install Playwright (pip install of the 'browser' extra failed): the browser check cannot run")
        return 2
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import sync_playwright

    shots = run_dir / "screenshots"
    shutil.rmtree(shots, ignore_errors=True)
    shots.mkdir(parents=True)
    work = run_dir / "browser-check"  # copies: JupyterLab never writes into the executed notebooks
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    for _, n, executed in chosen.values():  # executed copies of the chain; the lab as it is in notebooks/
        shutil.copy((run_dir if executed else ROOT / "notebooks") / n, work / n)
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="browser-check-") as tmp:
        home, port, token = Path(tmp), free_port(), secrets.token_hex(16)
        try:
            lab = start_lab(work, home, port, token)
        except CheckFailed as err:
            log(f"FAILED: {err}")
            return 1
        log(f"JupyterLab on port {port} ready in {time.time() - t0:.0f} s")
        passed, failures = [], []
        try:
            with sync_playwright() as pw:
                try:
                    context = pw.chromium.launch_persistent_context(
                        str(home / "chromium-profile"), executable_path=str(chromium), headless=True,
                        args=CHROMIUM_ARGS, viewport=VIEWPORT)
                except PlaywrightError as err:
                    log(f"cannot start {chromium} with Playwright: {str(err).splitlines()[0]}")
                    return 2
                for check, _, _ in chosen.values():
                    limit = 120 if check is check_mine_negatives else args.timeout
                    page = context.new_page()
                    try:
                        check(page, port, token, shots, limit, passed)
                    except (CheckFailed, PlaywrightError) as err:
                        failures.append(str(err))
                        log(f"FAILED: {err}")
                    finally:
                        page.close()
                context.close()
        finally:
            stop_lab(lab)
        if failures:
            log(f"screenshots in {shots.relative_to(ROOT)}/; JupyterLab log tail:\n"
                + (home / "lab.log").read_text()[-1500:])
    log(f"{time.time() - t0:.0f} s; screenshots in {shots.relative_to(ROOT)}/: "
        + ", ".join(sorted(p.name for p in shots.glob("*.png"))))
    print(f"browser-check: {len(passed)} passed, {len(failures)} failed", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
