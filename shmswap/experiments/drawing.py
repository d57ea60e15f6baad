"""The teaching mode's drawing: one picture of a tiny device, in the terminal, SVG, PNG and GIF.

A ``Frame`` is what is drawn, as plain data taken from ``Model.snapshot()`` and the shared
memory: per cluster its slots (``H`` the header page, for a slot in use the digit of the CPU it
was allocated on -- the CPU the task ran on when ``folio_alloc_swap`` returned, which for a task
that migrated in its sleep is the CPU it woke on, not the one it started on --, ``*`` a slot in
use whose CPU the lesson does not know, ``.`` a free slot), its list, its table object (or none),
whether the seed lost it and a ``mark`` (what a task in the middle of an operation does with it:
"cpu0 isolated it, asleep for its table"); per CPU the slot its cached ``offset[0]`` points at;
every non-empty list in order.  The kernel's own harnesses draw state the same way
(tools/testing/vma: ``AA B   **  CC``)::

    cluster 0 [H000111.] frag[0]    table #0
    cluster 1 [........] free       no table
    CPU 0 caches offset[0] = 7 -> cluster 0 slot 7

The pictures are one geometry (``shapes``: rectangles, polygons and text in a 720-wide canvas)
rendered twice: by hand into SVG (``svg``; the HTML page inlines it) and through matplotlib into
PNG (``png``), so every medium shows the same drawing.  ``gif`` animates PNG frames with Pillow.
"""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass, field
from html import escape

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import Polygon, Rectangle  # noqa: E402
from PIL import Image  # noqa: E402  (Pillow comes with matplotlib)
from rich.text import Text  # noqa: E402

__all__ = ["ClusterView", "CpuView", "Frame", "SHORT_LIST", "terminal", "shapes", "svg", "png", "gif",
           "CPU_COLOURS", "LEGEND"]

SHORT_LIST = {"free_clusters": "free", "full_clusters": "full", "discard_clusters": "discard"}
CPU_COLOURS = ("#4c8fd6", "#e0803a", "#5aa469", "#b45cc4")
_RICH_CPU = ("bold cyan", "bold yellow", "bold green", "bold magenta")
_WIDTH = 720
LEGEND = ("H: the header page; a digit: the CPU the slot was allocated on (after a migration, the CPU the "
          "task woke on); #N: the table object")


def short_list(name: str | None) -> str:
    """``nonfull_clusters[0]`` -> ``nonfull[0]``; None -> ``(no list)``."""
    if name is None:
        return "(no list)"
    return SHORT_LIST.get(name, name.replace("_clusters", ""))


@dataclass(frozen=True)
class ClusterView:
    index: int
    slots: str                  # one character per slot: H header, the CPU it was allocated on, * in use, . free
    list: str | None            # the list it is on (full name), None when on no list
    table: int                  # the table object's index, -1: no table
    flag: str
    lost: bool = False
    mark: str = ""              # what a task in the middle of an operation does with it (a step's ``during``)


@dataclass(frozen=True)
class CpuView:
    cpu: int
    offset: int                 # percpu_swap_cluster.offset[0]; 0: nothing cached
    spc: int

    @property
    def cluster(self) -> int | None:
        return self.offset // self.spc if self.offset else None


@dataclass(frozen=True)
class Frame:
    """One picture: a caption, the clusters, the CPUs' caches, the lists and a note."""

    caption: str
    clusters: tuple[ClusterView, ...]
    cpus: tuple[CpuView, ...]
    lists: dict[str, list[int]] = field(default_factory=dict)
    note: str = ""
    variant: str = "seed"

    def as_dict(self) -> dict:
        return asdict(self)


# -- the terminal -----------------------------------------------------------------------------------

def terminal(frame: Frame) -> list[Text]:
    """The frame as rich ``Text`` lines (colour per CPU on a terminal, plain text otherwise)."""
    lines = []
    cached: dict[int, list[int]] = {}
    for c in frame.cpus:
        if c.cluster is not None:
            cached.setdefault(c.cluster, []).append(c.cpu)
    for cl in frame.clusters:
        t = Text(f"  cluster {cl.index} [")
        for ch in cl.slots:
            style = _RICH_CPU[int(ch) % len(_RICH_CPU)] if ch.isdigit() else ("dim" if ch == "." else "")
            t.append(ch, style=style)
        t.append(f"] {short_list(cl.list):12} ")
        t.append(f"table #{cl.table}" if cl.table >= 0 else "no table", style="" if cl.table >= 0 else "dim")
        if cl.lost:
            t.append("  LOST (isolated, on no list)", style="bold red")
        notes = ([cl.mark] if cl.mark else []) + (["cached by CPU " + ", ".join(map(str, cached[cl.index]))]
                                                 if cl.index in cached else [])
        if notes:
            t.append("  <- " + "; ".join(notes), style="bold" if cl.mark else "")
        lines.append(t)
    for c in frame.cpus:
        t = Text(f"  CPU {c.cpu} ", style=_RICH_CPU[c.cpu % len(_RICH_CPU)])
        t.append(f"offset[0] = {c.offset}" + (f" -> cluster {c.cluster} slot {c.offset}" if c.offset else
                                               " (nothing cached: the next allocation takes the slow path)"))
        lines.append(t)
    lists = "  ".join(f"{short_list(k)}: {' '.join(map(str, v))}" for k, v in frame.lists.items() if v)
    lines.append(Text(f"  lists  {lists or '(all empty)'}"))
    return lines


# -- one geometry, two renderers ------------------------------------------------------------------------

@dataclass(frozen=True)
class Shape:
    kind: str                   # rect, poly, text
    x: float = 0.0
    y: float = 0.0
    w: float = 0.0
    h: float = 0.0
    fill: str = "none"
    stroke: str = "none"
    dash: bool = False
    text: str = ""
    size: float = 12.0
    anchor: str = "start"       # start, middle, end
    bold: bool = False
    points: tuple[tuple[float, float], ...] = ()


def _height(frame: Frame) -> float:
    return 96 + 44 * len(frame.clusters) + 30 * len(frame.cpus) + 30


def shapes(frame: Frame) -> list[Shape]:
    """The drawing as shapes in a ``720 x _height(frame)`` canvas, y downwards."""
    out = [Shape("rect", 0, 0, _WIDTH, _height(frame), fill="#ffffff")]
    out.append(Shape("text", 12, 22, text=frame.caption, size=13, bold=True))
    if frame.note:
        out.append(Shape("text", 12, 42, text=frame.note, size=11, fill="#444444"))
    cached: dict[int, list[int]] = {}
    for c in frame.cpus:
        if c.cluster is not None:
            cached.setdefault(c.cluster, []).append(c.cpu)
    box, gap, x0, y = 26, 3, 100, 70
    for cl in frame.clusters:
        out.append(Shape("text", 12, y + 18, text=f"cluster {cl.index}", size=12, bold=True))
        for i, ch in enumerate(cl.slots):
            x = x0 + i * (box + gap)
            if ch.isdigit():
                fill = CPU_COLOURS[int(ch) % len(CPU_COLOURS)]
            elif ch == "H":
                fill = "#9a9a9a"
            elif ch == "*":
                fill = "#c9c9c9"
            else:
                fill = "#ffffff"
            out.append(Shape("rect", x, y, box, box, fill=fill, stroke="#333333"))
            if ch != ".":
                out.append(Shape("text", x + box / 2, y + 18, text=ch, size=11, anchor="middle",
                                 fill="#ffffff" if ch.isdigit() else "#222222", bold=True))
            for cpu in (c.cpu for c in frame.cpus if c.offset and c.offset == cl.index * len(cl.slots) + i):
                colour = CPU_COLOURS[cpu % len(CPU_COLOURS)]
                tip = x + box / 2
                out.append(Shape("poly", points=((tip, y + box + 1), (tip - 6, y + box + 10), (tip + 6, y + box + 10)),
                                 fill=colour, stroke="#222222"))
        xr = x0 + len(cl.slots) * (box + gap) + 14
        out.append(Shape("text", xr, y + 18, text=short_list(cl.list), size=12))
        tx = xr + 110
        if cl.table >= 0:
            out.append(Shape("rect", tx, y + 3, 86, 20, fill="#fff4c2", stroke="#8a6d00"))
            out.append(Shape("text", tx + 43, y + 17, text=f"table #{cl.table}", size=11, anchor="middle"))
        else:
            out.append(Shape("rect", tx, y + 3, 86, 20, fill="#ffffff", stroke="#aaaaaa", dash=True))
            out.append(Shape("text", tx + 43, y + 17, text="no table", size=11, anchor="middle", fill="#888888"))
        if cl.lost:
            out.append(Shape("text", tx + 96, y + 17, text="LOST", size=12, fill="#c62828", bold=True))
        elif cl.index in cached:
            out.append(Shape("text", tx + 96, y + 17, text="cached by CPU " + ",".join(map(str, cached[cl.index])),
                             size=11, fill="#333333"))
        if cl.mark:                     # under the list and the table: the row's free line
            out.append(Shape("text", xr, y + 38, text=cl.mark, size=10, fill="#6a1b9a", bold=True))
        y += 44
    y += 8
    for c in frame.cpus:
        colour = CPU_COLOURS[c.cpu % len(CPU_COLOURS)]
        out.append(Shape("rect", 12, y, 64, 22, fill=colour, stroke="#222222"))
        out.append(Shape("text", 44, y + 16, text=f"CPU {c.cpu}", size=12, anchor="middle", fill="#ffffff", bold=True))
        what = (f"per-CPU cache: offset[0] = {c.offset} (cluster {c.cluster}, slot {c.offset})" if c.offset else
                "per-CPU cache: offset[0] = 0, nothing cached")
        out.append(Shape("text", 88, y + 16, text=what, size=12))
        y += 30
    lists = "   ".join(f"{short_list(k)}: {' '.join(map(str, v))}" for k, v in frame.lists.items() if v)
    out.append(Shape("text", 12, y + 16, text=f"lists   {lists or '(all empty)'}", size=12, fill="#333333"))
    return out


def svg(frame: Frame) -> str:
    """The frame as a standalone SVG document (no external references)."""
    h = _height(frame)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{_WIDTH}" height="{h:g}" '
             f'viewBox="0 0 {_WIDTH} {h:g}" font-family="DejaVu Sans, Arial, sans-serif">']
    for s in shapes(frame):
        if s.kind == "rect":
            dash = ' stroke-dasharray="4 3"' if s.dash else ""
            parts.append(f'<rect x="{s.x:g}" y="{s.y:g}" width="{s.w:g}" height="{s.h:g}" fill="{s.fill}" '
                         f'stroke="{s.stroke}"{dash}/>')
        elif s.kind == "poly":
            pts = " ".join(f"{px:g},{py:g}" for px, py in s.points)
            parts.append(f'<polygon points="{pts}" fill="{s.fill}" stroke="{s.stroke}"/>')
        else:
            weight = ' font-weight="bold"' if s.bold else ""
            fill = s.fill if s.fill != "none" else "#000000"
            parts.append(f'<text x="{s.x:g}" y="{s.y:g}" font-size="{s.size:g}" text-anchor="{s.anchor}" '
                         f'fill="{fill}"{weight}>{escape(s.text)}</text>')
    parts.append("</svg>")
    return "\n".join(parts)


_HA = {"start": "left", "middle": "center", "end": "right"}


def png(frame: Frame, dpi: int = 100) -> bytes:
    """The frame drawn by matplotlib, as PNG bytes."""
    h = _height(frame)
    fig = plt.figure(figsize=(_WIDTH / dpi, h / dpi), dpi=dpi)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, _WIDTH)
    ax.set_ylim(h, 0)
    ax.axis("off")
    px = 72 / dpi                                           # font points per canvas pixel
    for s in shapes(frame):
        if s.kind == "rect":
            ax.add_patch(Rectangle((s.x, s.y), s.w, s.h, facecolor=s.fill, linewidth=1,
                                   edgecolor=s.stroke if s.stroke != "none" else "none",
                                   linestyle="--" if s.dash else "-"))
        elif s.kind == "poly":
            ax.add_patch(Polygon(s.points, closed=True, facecolor=s.fill, edgecolor=s.stroke, linewidth=1))
        else:
            ax.text(s.x, s.y, s.text, fontsize=s.size * px, ha=_HA[s.anchor], va="baseline",
                    color=s.fill if s.fill != "none" else "#000000", fontweight="bold" if s.bold else "normal")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    return buf.getvalue()


def gif(frames: list[Frame], ms_per_frame: int = 1600) -> bytes:
    """The frames animated (PNG frames through Pillow), looping."""
    images = [Image.open(io.BytesIO(png(f))).convert("RGB") for f in frames]
    size = (max(i.width for i in images), max(i.height for i in images))
    padded = []
    for im in images:
        canvas = Image.new("RGB", size, "white")
        canvas.paste(im, (0, 0))
        padded.append(canvas.convert("P", palette=Image.ADAPTIVE))
    buf = io.BytesIO()
    padded[0].save(buf, format="GIF", save_all=True, append_images=padded[1:], duration=ms_per_frame, loop=0)
    return buf.getvalue()
