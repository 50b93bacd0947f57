"""CLI layer: ``mosmon``, the openMosix terminal monitor: per-node bar charts of load, speed,
memory or utilisation from this node's agent (cluster.nodes), refreshed every second.

Frames are rendered as plain styled text by ``render`` (pure, tested directly); curses only
paints them, and ``--once`` prints one frame without curses for scripts and tests.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass
from typing import Any

from omview.cli._common import (
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    Parser,
    connect,
    print_json,
    run,
)
from omview.model.client import AgentClient
from omview.model.cluster import NodeInfo
from omview.model.errors import OmviewError

PROG = "mosmon"

MODES = ("load", "speed", "memory", "util")
TITLES = {"load": "load", "speed": "speed", "memory": "memory (used of total)", "util": "utilisation %"}
KEYS = {"l": "load", "s": "speed", "m": "memory", "u": "util"}
HELP_LINE = "l)oad s)peed m)emory u)til t)otal q)uit  <- -> scroll"

#: Below this size a chart makes no sense; the frame then only says so.
MIN_WIDTH = 24
MIN_HEIGHT = 8
Y_AXIS = 7  # width of the scale labels left of the chart

#: A frame is lines of (text, style) segments; styles: title, text, bar, total, down, axis.
Segment = tuple[str, str]
Line = list[Segment]


@dataclass
class View:
    """What the user chose to see (changed by keys)."""

    mode: str = "load"
    show_total: bool = False
    offset: int = 0  # index of the first node column shown when not all fit


def nice_ceiling(value: float) -> int:
    """Round up to 1, 2 or 5 times a power of ten, for a readable scale."""
    if value <= 1:
        return 1
    step = 10 ** math.floor(math.log10(value))
    for mult in (1, 2, 5, 10):
        if mult * step >= value:
            return int(mult * step)
    return int(10 * step)  # not reached


def short_number(value: float, *, memory: bool = False) -> str:
    """Compact figure for a bar label: 950, 12k, 3.4M; memory in binary units."""
    base, units = (1024.0, ("", "K", "M", "G", "T")) if memory else (1000.0, ("", "k", "M", "G", "T"))
    v = float(value)
    for unit in units:
        if abs(v) < base or unit == units[-1]:
            if unit == "":
                return f"{v:.0f}"
            return f"{v:.1f}{unit}" if abs(v) < 10 else f"{v:.0f}{unit}"
        v /= base
    return str(value)  # not reached


def _bar_value(node: NodeInfo, mode: str) -> float:
    if mode == "load":
        return float(node.load)
    if mode == "speed":
        return float(node.speed)
    if mode == "memory":
        return float(max(node.tmem - node.mem, 0))
    return float(node.util)


def _scale(nodes: list[NodeInfo], mode: str) -> int:
    up = [n for n in nodes if n.up] or nodes
    if mode == "util":
        return 100
    if mode == "memory":
        return max([n.tmem for n in nodes] + [1])
    if mode == "load":
        # 100 = one reference CPU busy: never scale below it, or an idle cluster looks busy
        return nice_ceiling(max([n.load for n in up] + [100]))
    return nice_ceiling(max([n.speed for n in up] + [1]))


def totals_text(nodes: list[NodeInfo], mode: str) -> str:
    """The 't' line: how many machines are configured and up, plus the mode's cluster total."""
    up = [n for n in nodes if n.up]
    head = f"machines: {len(nodes)} configured, {len(up)} up, {len(nodes) - len(up)} down"
    if mode == "load":
        tail = f"total load {sum(n.load for n in up)}"
    elif mode == "speed":
        tail = f"total speed {sum(n.speed for n in up)}"
    elif mode == "memory":
        used = sum(max(n.tmem - n.mem, 0) for n in up)
        tail = f"memory used {short_number(used, memory=True)} of {short_number(sum(n.tmem for n in up), memory=True)}"
    else:
        avg = sum(n.util for n in up) / len(up) if up else 0.0
        tail = f"average utilisation {avg:.0f}%"
    return f"{head} | {tail}"


def _clip(line: Line, width: int) -> Line:
    out: Line = []
    left = width
    for text, style in line:
        if left <= 0:
            break
        out.append((text[:left], style))
        left -= len(text[:left])
    return out


def render(
    nodes: list[NodeInfo],
    view: View,
    width: int,
    height: int,
    *,
    my_id: int = 0,
    clock: str = "",
    note: str = "",
) -> list[Line]:
    """One frame of exactly ``height`` lines (or fewer when tiny), none wider than ``width``."""
    if width <= 0 or height <= 0:
        return []
    if width < MIN_WIDTH or height < MIN_HEIGHT:
        return [[(f"mosmon: terminal too small (need {MIN_WIDTH}x{MIN_HEIGHT})"[:width], "title")]]
    nodes = sorted(nodes, key=lambda n: n.id)
    labels = [f"{'*' if n.id == my_id else '#'}{n.id}" for n in nodes]
    colw = max([5, *(len(lab) + 1 for lab in labels)])  # 5: room for "DOWN"
    barw = colw - 1
    fit = max((width - Y_AXIS) // colw, 1)
    offset = max(0, min(view.offset, len(nodes) - fit))
    view.offset = offset
    shown = list(range(offset, min(offset + fit, len(nodes))))

    pager = f"  [nodes {offset + 1}-{offset + len(shown)}/{len(nodes)}]" if len(nodes) > fit else ""
    right = clock
    title = f"omview mosmon: {TITLES[view.mode]}{pager}"
    if len(title) + len(right) + 1 > width:
        # narrow terminal: keep the mode and the scroll position, drop the decoration
        title = f"mosmon: {view.mode}{pager.replace('  [nodes ', ' [')}"
    pad = width - len(title) - len(right)
    lines: list[Line] = [[(title + " " * max(pad, 1) + right if pad > 0 else title, "title")]]
    if view.show_total:
        lines.append([(totals_text(nodes, view.mode), "total")])
    if note:
        lines.append([(note, "down")])

    chart_h = height - len(lines) - 2  # leave the axis-label row and the key row
    if chart_h < 2:
        chart_h = max(height - len(lines) - 1, 1)
    scale = _scale(nodes, view.mode)
    memory = view.mode == "memory"
    # per shown node: rows filled (from the bottom), rows of the total (memory), label above the bar
    columns: list[tuple[int, int, str, bool]] = []
    for i in shown:
        node = nodes[i]
        value = _bar_value(node, view.mode)
        filled = min(chart_h, math.ceil(value / scale * chart_h)) if value > 0 else 0
        total_rows = min(chart_h, math.ceil(node.tmem / scale * chart_h)) if memory and node.tmem else 0
        text = short_number(value, memory=memory)
        columns.append((filled, total_rows, text, node.up))

    for row in range(chart_h):
        level = chart_h - row  # 1 = bottom row
        if row == 0:
            ylab = short_number(scale, memory=memory)
        elif level == 1:
            ylab = "0"
        elif row == chart_h // 2 and chart_h >= 5 and scale >= 2:
            ylab = short_number(scale / 2, memory=memory)
        else:
            ylab = ""
        line: Line = [(f"{ylab:>{Y_AXIS - 2}} |", "axis")]
        for filled, total_rows, text, up in columns:
            if not up:
                cell = ("DOWN"[:barw] if level == 1 else "", "down")
            elif level <= filled:
                cell = ("#" * barw, "bar")
            elif level <= total_rows:
                cell = ("." * barw, "axis")
            elif level == max(filled, total_rows) + 1:
                cell = (text[:barw], "text")
            else:
                cell = ("", "text")
            line.append((f"{cell[0]:<{barw}} ", cell[1]))
        lines.append(line)

    axis: Line = [(" " * (Y_AXIS - 1) + "+", "axis")]
    for i in shown:
        axis.append((f"{labels[i]:<{colw}}", "text" if nodes[i].up else "down"))
    if not nodes:
        axis.append((" no nodes reported yet", "down"))
    lines.append(axis)
    if len(lines) < height:
        lines.append([(HELP_LINE, "axis")])
    return [_clip(line, width) for line in lines[:height]]


def frame_text(frame: list[Line]) -> str:
    """A frame as plain text, trailing blanks removed (what --once prints)."""
    return "\n".join("".join(text for text, _ in line).rstrip() for line in frame) + "\n"


def _fetch(client: AgentClient) -> list[NodeInfo]:
    return client.nodes()


# --- interactive (curses) ----------------------------------------------------------------


class _Monitor:
    """The curses loop: poll the agent each interval, repaint on data, keys and resize."""

    def __init__(self, client: AgentClient | None, view: View, interval: float) -> None:
        self.client = client
        self.view = view
        self.interval = interval
        self.nodes: list[NodeInfo] = []
        self.note = ""

    def poll(self) -> None:
        try:
            if self.client is None:
                self.client = connect(PROG)
            self.nodes = _fetch(self.client)
            self.note = ""
        except (OmviewError, TimeoutError) as exc:
            # keep the last picture and say why it is stale; reconnect on the next tick
            self.note = f"agent: {exc} (retrying)"
            if self.client is not None:
                self.client.close()
                self.client = None

    def loop(self, stdscr: Any) -> None:
        import curses

        styles = _curses_styles(curses)
        try:
            curses.curs_set(0)
        except curses.error:
            pass  # terminals without cursor control still work
        stdscr.timeout(100)
        next_poll = 0.0
        dirty = True
        while True:
            now = time.monotonic()
            if now >= next_poll:
                self.poll()
                next_poll = now + self.interval
                dirty = True
            if dirty:
                self.paint(stdscr, styles, curses)
                dirty = False
            key = stdscr.getch()
            if key == -1:
                continue
            dirty = True
            if key in (ord("q"), ord("Q"), 27):
                return
            char = chr(key).lower() if 0 <= key < 256 else ""
            if char == "t":
                self.view.show_total = not self.view.show_total
            elif char in KEYS:
                self.view.mode = KEYS[char]
            elif key == curses.KEY_LEFT:
                self.view.offset = max(0, self.view.offset - 1)
            elif key == curses.KEY_RIGHT:
                self.view.offset = min(self.view.offset + 1, max(len(self.nodes) - 1, 0))
            elif key == curses.KEY_RESIZE:
                curses.update_lines_cols()

    def paint(self, stdscr: Any, styles: dict[str, int], curses: Any) -> None:
        height, width = stdscr.getmaxyx()
        my_id = self.client.node_id if self.client is not None else 0
        frame = render(
            self.nodes, self.view, width, height, my_id=my_id, clock=time.strftime("%H:%M:%S"), note=self.note
        )
        stdscr.erase()
        for y, line in enumerate(frame):
            x = 0
            for text, style in line:
                # never write the bottom-right cell: curses raises after it moves the cursor off-screen
                room = width - x - (1 if y == height - 1 else 0)
                if room <= 0:
                    break
                try:
                    stdscr.addstr(y, x, text[:room], styles.get(style, 0))
                except curses.error:
                    pass  # the window shrank between getmaxyx and addstr; next paint fixes it
                x += len(text[:room])
        stdscr.refresh()


def _curses_styles(curses: Any) -> dict[str, int]:
    styles = {"title": curses.A_BOLD, "total": curses.A_BOLD, "down": curses.A_BOLD | curses.A_DIM}
    try:
        # https://no-color.org: a non-empty NO_COLOR turns colour off; bold/dim/reverse stay
        if curses.has_colors() and not os.environ.get("NO_COLOR"):
            curses.start_color()
            curses.use_default_colors()
            curses.init_pair(1, curses.COLOR_GREEN, -1)
            curses.init_pair(2, curses.COLOR_RED, -1)
            styles["bar"] = curses.color_pair(1) | curses.A_REVERSE
            styles["down"] = curses.color_pair(2) | curses.A_BOLD
    except curses.error:
        pass  # monochrome terminal: bold/dim styles above still tell down nodes apart
    styles.setdefault("bar", curses.A_REVERSE)
    return styles


# --- entry point --------------------------------------------------------------------------


def build_parser() -> Parser:
    parser = Parser(
        prog=PROG,
        description="Terminal monitor: bar charts of load, speed, memory or utilisation of every node "
        "this node's omview agent knows.",
        epilog=(
            "keys: l load, s speed, m memory, u utilisation, t total of machines, q quit,\n"
            "      left/right scroll when not all nodes fit. Down nodes show DOWN.\n\n"
            "exit codes: 0 ok, 2 usage error (or no terminal without --once), 3 the agent refused\n"
            "            or failed, 4 no agent running on this node"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--once", action="store_true", help="print one plain-text frame and exit (no curses)")
    parser.add_argument("--json", action="store_true", help="with --once: print the node table as JSON")
    parser.add_argument("--mode", choices=MODES, default="load", help="chart to start with (default: load)")
    parser.add_argument("--total", action="store_true", help="start with the total-of-machines line shown")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between refreshes (default 1)")
    return parser


def _once(view: View, as_json: bool) -> int:
    with connect(PROG) as client:
        nodes = _fetch(client)
        my_id = client.node_id
    if as_json:
        print_json([n.to_dict() for n in sorted(nodes, key=lambda n: n.id)])
        return EXIT_OK
    size = shutil.get_terminal_size((80, 24))
    frame = render(nodes, view, size.columns, size.lines, my_id=my_id, clock=time.strftime("%H:%M:%S"))
    sys.stdout.write(frame_text(frame))
    return EXIT_OK


def _interactive(view: View, interval: float) -> int:
    import curses

    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise CliError(
            "the monitor needs a terminal; use 'mosmon --once' for one plain-text frame", EXIT_USAGE
        )
    client = connect(PROG)  # fail with "no agent" before the screen is taken over
    monitor = _Monitor(client, view, interval)
    try:
        curses.wrapper(monitor.loop)
    except curses.error as exc:
        raise CliError(
            f"cannot drive this terminal ({exc}); check TERM or use 'mosmon --once'", EXIT_USAGE
        ) from None
    finally:
        if monitor.client is not None:
            monitor.client.close()
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    ns = parser.parse_args(argv)
    if ns.json and not ns.once:
        parser.error("--json needs --once")
    if not 0.1 <= ns.interval <= 3600:
        parser.error(f"--interval must be between 0.1 and 3600 seconds, not {ns.interval:g}")
    view = View(mode=ns.mode, show_total=ns.total)
    if ns.once:
        return run(PROG, lambda: _once(view, ns.json))
    return run(PROG, lambda: _interactive(view, ns.interval))


if __name__ == "__main__":
    sys.exit(main())
