"""Tests of the teaching mode's lessons, drawing and page (shmswap.experiments.lessons, drawing,
demo_page), and of the page in a real headless browser (Chromium, driven by Playwright when it is
installed, else Chromium's own ``--dump-dom``); the browser tests skip, saying why, without one."""

from __future__ import annotations

import io
import re
import shutil
import subprocess
import tempfile

import pytest
from PIL import Image

from shmswap.experiments.demo_page import html_page
from shmswap.experiments.drawing import LEGEND, gif, png, svg, terminal
from shmswap.experiments.lessons import LESSONS, run_lesson

try:
    from playwright.sync_api import sync_playwright
except ImportError:                                   # optional: the test extra installs it
    sync_playwright = None

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def steps_of(run):
    return [(s.cpu, s.func, s.changed, s.schedule, [(q.ask, q.answer) for q in s.questions]) for s in run.steps]


@pytest.mark.parametrize("name", list(LESSONS))
def test_every_lesson_runs_clean_and_replays_exactly(name):
    a, b = run_lesson(name, 5), run_lesson(name, 5)
    assert a.check_ok and all(c["violations"] == 0 for c in a.checks)
    assert a.steps and all(s.questions for s in a.steps)
    assert steps_of(a) == steps_of(b)
    assert [f.as_dict() for f in a.frames] == [f.as_dict() for f in b.frames]
    assert a.points > 0 and (a.points, a.digest) == (b.points, b.digest)     # the same schedules, point by point


def test_the_seed_picks_the_problem():
    for name in LESSONS:
        problems = {repr(run_lesson(name, seed).setup) + repr(steps_of(run_lesson(name, seed))) for seed in range(6)}
        assert len(problems) > 1, name


def test_fast_path_then_slow_path():
    run = run_lesson("paths", 0)
    answers = [s.questions[0].answer for s in run.steps]
    assert "swap_alloc_fast" in answers[0] and "swap_alloc_slow" in answers[1]
    assert "allocated for cluster" in run.steps[1].questions[1].answer       # the slow path's new table
    assert any("full (from" in s.questions[2].answer for s in run.steps)       # a cluster filled up


def test_two_cpus_share_a_cluster():
    run = run_lesson("sharing", 0)
    first = run.steps[0]
    assert "from frag[0]" in first.questions[0].answer                        # no free cluster left
    shared = [c for c in first.after.clusters if c.index == 0][0]
    assert {"0", "1"} <= set(shared.slots)
    assert {c.cluster for c in first.after.cpus} == {0}                      # both CPUs cache cluster 0


def test_an_emptied_cluster_loses_its_table():
    run = run_lesson("emptying", 0)
    last_free = [s for s in run.steps if s.func.startswith("free_swap")][-1]
    assert last_free.questions[0].answer.startswith("yes")
    assert "free (from" in last_free.questions[1].answer
    ci = int(re.search(r"cluster (\d+) lost its table", last_free.changed).group(1))
    assert [c for c in last_free.after.clusters if c.index == ci][0].table == -1


def test_the_sleep_lesson_loses_a_cluster_in_the_seed_only():
    for seed in range(4):
        run = run_lesson("sleep", seed)
        seed_check, merged_check = run.checks
        assert seed_check["alloc_table"] == "seed" and seed_check["findings"] == ["cluster 1: T5"]
        assert merged_check["alloc_table"] == "merged" and merged_check["findings"] == []
        slept = [s for s in run.steps if any("sleeps" in e for e in s.events)]
        assert len(slept) == 2
        assert slept[0].after.variant == "seed" and slept[1].fresh and slept[1].after.variant == "merged"
        assert any(c.lost for c in slept[0].after.clusters) and not any(c.lost for c in slept[1].after.clusters)


def test_the_sleep_question_is_the_re_check_not_the_wake_cpu():
    """The wake-up CPU is in the schedule the lesson prints; the question is what the task does
    there, and its answer is what the model did: the slot taken, the table freed or installed."""
    for seed in range(6):
        seed_step, merged_step = [s for s in run_lesson("sleep", seed).steps if s.during]
        for st in (seed_step, merged_step):
            asks = [q.ask for q in st.questions]
            assert not any("which CPU" in a for a in asks) and "cpu0 wakes on cpu1" in st.schedule
            assert "per-CPU cluster or the cluster it isolated" in asks[0]
        taken = int(re.search(r"cluster (\d+), slot", seed_step.questions[1].answer).group(1))
        isolated = [c.index for c in seed_step.after.clusters if c.lost]
        answer = seed_step.questions[0].answer
        assert answer.startswith("the seed re-checks CPU 1's per-CPU cluster")
        assert f"returns cluster {taken} instead of cluster {isolated[0]}" in answer   # the lost record's word
        unused = re.search(r"table #(\d+), allocated for cluster \d+, freed unused", seed_step.changed)
        assert (f"table #{unused.group(1)}, allocated in the sleep, is freed unused" in answer) if unused else \
            "the sleeping allocation failed too" in answer
        merged = merged_step.questions[0].answer
        assert merged.startswith("no re-check: it leaves CPU 1's per-CPU cluster")
        installed = re.search(r"table #(\d+) allocated for cluster (\d+) \(sleeping\)", merged_step.changed)
        assert (f"installs table #{installed.group(1)} in cluster {installed.group(2)}" in merged) if installed else \
            "returns NULL after putting cluster 1 back on free_clusters" in merged


def test_the_middle_of_a_step_is_drawn():
    """The sleep: cpu0 asleep, its cluster isolated (no list, no table, not yet lost), cpu1 not run
    yet; the reader: the table pointer it holds still the cluster's.  Between before and after."""
    run = run_lesson("sleep", 3)
    for st in (s for s in run.steps if s.during):
        (m,) = st.during
        assert m.line == "run cpu0 until sleep in swap_cluster_alloc_table" and m.line in st.schedule
        marked = [c for c in m.frame.clusters if c.mark]
        assert [c.index for c in marked] == [1] and "asleep" in marked[0].mark
        assert marked[0].list is None and marked[0].table == -1 and not marked[0].lost
        assert m.frame.cpus == st.before.cpus                                  # cpu1 ran after the stop
        assert [c.slots for c in m.frame.clusters] == [c.slots for c in st.before.clusters]
    frames = run.frames
    for st in run.steps:
        i = frames.index(st.after)
        assert frames[i - len(st.during):i] == [m.frame for m in st.during]
    step = run_lesson("reader", 0).steps[1]
    (m,) = step.during
    ((ci, table),) = [(c.index, c.table) for c in m.frame.clusters if c.mark]
    assert f"holds table #{table}" in m.frame.clusters[ci].mark and table >= 0
    assert f"loaded cluster {ci}'s table pointer (#{table})" in step.changed
    assert step.after.clusters[ci].table == -1                                 # freed after the stop


def test_a_slot_shows_the_cpu_it_was_allocated_on():
    """After cpu0 migrates to CPU 1 in its sleep, its slot is drawn as CPU 1's, as the legend says:
    the cluster CPU 1 caches holds it."""
    assert "the CPU the slot was allocated on" in LEGEND and "woke on" in LEGEND
    for st in (s for s in run_lesson("sleep", 3).steps if s.during):
        slot = int(re.search(r"slot (\d+)", st.questions[1].answer).group(1))
        c = st.after.clusters[slot // 8]
        assert c.slots[slot % 8] == "1" and st.cpu == 0
        assert st.after.cpus[1].cluster == c.index


def test_the_sleep_is_scripted_and_the_other_cpu_runs_inside_it():
    """The interleaving is the deterministic scheduler's, following the step's script: cpu0 runs until
    it sleeps in swap_cluster_alloc_table, cpu1 (when the seed says so) runs its allocation, cpu0 wakes
    on cpu1."""
    meanwhile = set()
    for seed in range(6):
        for st in run_lesson("sleep", seed).steps:
            if not any("sleeps" in e for e in st.events):
                assert st.schedule == []
                continue
            assert "run cpu0 until sleep in swap_cluster_alloc_table" in st.schedule
            assert "cpu0 wakes on cpu1" in st.schedule and st.schedule[-1] == "run cpu0"
            if "run cpu1" in st.schedule:
                meanwhile.add(seed)
                c = st.changed
                assert c.index("cpu0 runs: atomic table allocation failed") < c.index("cpu1 runs: folio_alloc_swap") \
                    < c.index("cpu0 runs: table #") < c.index("woke on CPU 1")
    assert 0 < len(meanwhile) < 6                # the seed picks whether cpu1 runs while cpu0 sleeps


def test_a_reader_during_a_table_free():
    seen = set()
    for seed in range(8):
        step = run_lesson("reader", seed).steps[1]
        answer = step.questions[0].answer
        assert answer.startswith("no:")
        r, w = step.cpu, 1 - step.cpu
        assert step.schedule[-3:] == [f"run cpu{r} until reader", f"run cpu{w}", f"run cpu{r}"]
        c = step.changed
        assert c.index(f"cpu{r} runs: the reader loaded") < c.index(f"cpu{w} runs: frees slot") \
            < c.index("lost its table") < c.index(f"cpu{r} runs: the reader read")
        seen.add("rejected" if "rejected" in answer else "null")
    assert seen == {"rejected", "null"}          # the seed picks whether the table is reused meanwhile


def test_terminal_drawing():
    run = run_lesson("paths", 0)
    lines = [t.plain for t in terminal(run.final)]
    assert lines[0].startswith("  cluster 0 [H")
    assert any("CPU 0 offset[0]" in x for x in lines) and lines[-1].startswith("  lists")


def test_pictures():
    run = run_lesson("sleep", 1)
    frames = run.frames
    assert len(frames) == len(run.steps) + 2 + 2                  # two devices: two starts; two sleeps drawn
    doc = svg(frames[1])
    assert doc.startswith("<svg") and "during step 1" in doc and "cpu0 isolated it, asleep for its table" in doc
    doc = svg(frames[2])
    assert doc.startswith("<svg") and "LOST" in doc and "table #" in doc
    im = Image.open(io.BytesIO(png(frames[1])))
    assert im.format == "PNG" and im.width == 720
    anim = Image.open(io.BytesIO(gif(frames[:3], ms_per_frame=100)))
    assert anim.format == "GIF" and anim.n_frames == 3


def test_the_page_is_self_contained_and_hides_the_answers():
    run = run_lesson("reader", 0)
    page = html_page(run, {"lesson": "reader", "seed": 0})
    assert page.count('class="slide"') == len(run.steps) + 2 + 1                  # + the reader's window
    assert page.count('data-during="1"') == 1 and "the schedule stopped after <code>run cpu0 until reader" in page
    assert page.count('<div class="answer" hidden>') == sum(len(s.questions) + 1 for s in run.steps) + 1
    assert page.count("schedule: <code>") == 1 and "run cpu0 until reader" in page    # step 2's script, shown
    assert not re.search(r"(src|href)\s*=|<link|@import|url\(", page)
    assert "https:" not in page and "http:" not in page.replace("http://www.w3.org/2000/svg", "")


# -- the page in a real browser -----------------------------------------------------------------------------

def _page(tmp_path, lesson="emptying"):
    path = tmp_path / f"{lesson}.html"
    path.write_text(html_page(run_lesson(lesson, 0), {"lesson": lesson, "seed": 0}))
    return path


@pytest.mark.timeout(120)
def test_page_in_chromium_with_playwright(tmp_path):
    if CHROMIUM is None:
        pytest.skip("no Chromium installed (apt-get install chromium; .ci/run does it)")
    if sync_playwright is None:
        pytest.skip("Playwright for Python is not installed (pip install '.[test]')")
    path = _page(tmp_path)
    errors = []
    with sync_playwright() as p:
        try:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS[1:], headless=True)
        except Exception as e:  # noqa: BLE001 - any launch failure means: fall back to --dump-dom
            pytest.skip(f"Playwright cannot start {CHROMIUM}: {str(e).splitlines()[0]}")
        try:
            page = browser.new_page()
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(path.as_uri())
            n = page.locator(".slide").count()
            assert page.text_content("#counter") == f"1 / {n}"
            first = page.inner_html(".slide.current .drawing")
            page.click("#next")
            assert page.text_content("#counter") == f"2 / {n}"
            assert page.inner_html(".slide.current .drawing") == first     # slide 1: still before step 1
            page.keyboard.press("ArrowRight")
            assert page.text_content("#counter") == f"3 / {n}"
            assert page.inner_html(".slide.current .drawing") != first     # after step 1: a slot freed
            assert not page.locator(".slide.current .answer").first.is_visible()
            page.keyboard.press("a")
            assert page.locator(".slide.current .answer").first.is_visible()
            page.keyboard.press("ArrowLeft")
            assert page.text_content("#counter") == f"2 / {n}"
            page.click("#prev")
            assert page.is_disabled("#prev")
            page.goto(_page(tmp_path, "reader").as_uri())           # step 2 stops in the reader's window
            n = page.locator(".slide").count()
            for _ in range(2):
                page.keyboard.press("n")
            step = page.inner_html(".slide.current .drawing")
            page.keyboard.press("n")
            assert page.text_content("#counter") == f"4 / {n}"
            assert page.get_attribute(".slide.current", "data-during") == "1"
            assert "the schedule stopped after run cpu0 until reader" in page.text_content(".slide.current")
            assert page.inner_html(".slide.current .drawing") != step and \
                "reader holds table" in page.inner_html(".slide.current .drawing")
            page.keyboard.press("p")
            assert page.inner_html(".slide.current .drawing") == step
        finally:
            browser.close()
    assert errors == []


@pytest.mark.timeout(120)
def test_page_in_chromium_dump_dom(tmp_path):
    """Without Playwright: Chromium runs the page's script and dumps the DOM it made."""
    if CHROMIUM is None:
        pytest.skip("no Chromium installed (apt-get install chromium; .ci/run does it)")
    path = _page(tmp_path)
    with tempfile.TemporaryDirectory() as profile:
        out = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "--dump-dom", path.as_uri()],
                             capture_output=True, text=True, timeout=90)
    if out.returncode != 0 or "<html" not in out.stdout:
        pytest.skip(f"Chromium could not run headless here: {out.stderr.strip().splitlines()[-1:]}")
    dom = out.stdout
    n = dom.count('class="slide')
    assert re.search(rf'<span id="counter">1 / {n}</span>', dom)       # the script ran
    assert dom.count('class="slide current"') == 1
    assert 'id="prev" disabled' in dom
