"""One self-contained, offline page that steps through a lesson (``shmswap demo --html FILE``).

Nothing is fetched: the pictures are inline SVG (the same drawing as ``--svg`` and ``--png``), the
style and the script are in the page.  Slide 0 is the lesson's introduction and its starting
state; slide *k* shows the state before step *k*, the step, and its questions, whose answers stay
hidden until "show answers" (or the key ``a``) reveals them; a step whose script stops in the middle
(the sleep, the reader's window) has one more slide after it for each stop ("during step *k*":
where the schedule stopped, what the running task holds, the picture); the last slide is the final
state and the checker's verdict.  Next / previous: the buttons, the arrow keys, ``n`` / ``p``, Space.
"""

from __future__ import annotations

import json
from html import escape

from .drawing import LEGEND, svg
from .lessons import LessonRun

__all__ = ["html_page"]

_STYLE = """
body { font-family: DejaVu Sans, Arial, sans-serif; margin: 1.5em auto; max-width: 780px; color: #222; }
h1 { font-size: 1.3em; }
.slide { display: none; }
.slide.current { display: block; }
.step { font-family: DejaVu Sans Mono, monospace; font-weight: bold; margin: .6em 0; }
.q { margin: .3em 0 .3em 1em; }
.answer { color: #1b5e20; margin-left: 1em; }
.answer[hidden] { display: none; }
nav { margin: 1em 0; display: flex; gap: .6em; align-items: center; }
button { font-size: 1em; padding: .3em .9em; }
#counter { color: #555; }
.setup { color: #444; font-size: .95em; }
"""

_SCRIPT = """
(function () {
  var slides = document.querySelectorAll('.slide');
  var current = 0;
  function show(i) {
    if (i < 0 || i >= slides.length) { return; }
    slides[current].classList.remove('current');
    current = i;
    slides[current].classList.add('current');
    document.getElementById('counter').textContent = (current + 1) + ' / ' + slides.length;
    document.getElementById('prev').disabled = current === 0;
    document.getElementById('next').disabled = current === slides.length - 1;
  }
  function reveal() {
    slides[current].querySelectorAll('.answer').forEach(function (a) { a.hidden = false; });
  }
  document.getElementById('next').addEventListener('click', function () { show(current + 1); });
  document.getElementById('prev').addEventListener('click', function () { show(current - 1); });
  document.getElementById('reveal').addEventListener('click', reveal);
  document.addEventListener('keydown', function (e) {
    if (e.key === 'ArrowRight' || e.key === 'n' || e.key === ' ') { e.preventDefault(); show(current + 1); }
    else if (e.key === 'ArrowLeft' || e.key === 'p') { show(current - 1); }
    else if (e.key === 'a') { reveal(); }
  });
  show(0);
})();
"""


def _answer(text: str) -> str:
    return f'<div class="answer" hidden>{escape(text)}</div>'


def html_page(run: LessonRun, args: dict) -> str:
    """The lesson as one HTML document."""
    slides = []
    setup = "".join(f"<li>{escape(s)}</li>" for s in run.setup)
    first = run.steps[0].before if run.steps else run.final
    slides.append(f'<section class="slide" data-step="0"><p>{escape(run.intro)}</p>'
                  f'<p class="setup">The problem (seed {run.seed}):</p><ul class="setup">{setup}</ul>'
                  f'<p class="setup">{escape(LEGEND)}</p><div class="drawing">{svg(first)}</div></section>')
    for st in run.steps:
        qs = "".join(f'<div class="q">{escape(q.ask)}{_answer(q.answer)}</div>' for q in st.questions)
        device = escape(st.before.note or st.before.variant)
        fresh = f'<p class="setup">The same problem on a fresh device ({device}).</p>' if st.fresh else ""
        sched = (f'<p class="setup">schedule: <code>{escape("; ".join(st.schedule))}</code></p>'
                 if st.schedule else "")
        slides.append(f'<section class="slide" data-step="{st.n}">{fresh}<div class="drawing">{svg(st.before)}</div>'
                      f'<div class="step">{escape(st.headline())}</div>{sched}{qs}'
                      f'<div class="q">what changed?{_answer(st.changed)}</div></section>')
        for i, m in enumerate(st.during, 1):
            slides.append(f'<section class="slide" data-step="{st.n}" data-during="{i}">'
                          f'<div class="step">during {escape(st.headline())}</div>'
                          f'<p class="setup">the schedule stopped after <code>{escape(m.line)}</code>: '
                          f'{escape(m.text)}</p><div class="drawing">{svg(m.frame)}</div></section>')
    verdict = "; ".join(f"{c['alloc_table']}: {c['violations']} violations, findings: "
                        f"{', '.join(c['findings']) or 'none'}" for c in run.checks)
    slides.append(f'<section class="slide" data-step="end"><div class="drawing">{svg(run.final)}</div>'
                  f'<div class="q">the checker says{_answer(verdict)}</div></section>')
    argv = escape(json.dumps(args, sort_keys=True))
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<title>shmswap demo: {escape(run.title)}</title><style>{_STYLE}</style></head><body>'
            f'<h1>shmswap demo {escape(run.name)}: {escape(run.title)}</h1>'
            f'<p class="setup">arguments: <code>{argv}</code></p>'
            f'<nav><button id="prev">&larr; previous</button><button id="next">next &rarr;</button>'
            f'<button id="reveal">show answers</button><span id="counter"></span></nav>'
            f'{"".join(slides)}<script>{_SCRIPT}</script></body></html>\n')
