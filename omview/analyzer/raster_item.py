"""L5 analyzer: the overviews' picture item - one image covering the view, rebuilt when it changes.

The picture is computed by ``omview.analyzer.raster`` (numpy) at the device pixels the item
covers, when the item is painted and only if the view, the size or ``version`` changed since
the last build: several range changes between two frames cost one build, and a repaint for any
other reason (a checkpoint label, the axis) is a blit. The item works in data coordinates
like any pyqtgraph item (x float64 epoch seconds); the picture is drawn unscaled in device
pixels, so it is as sharp as the paths it replaces. Exports that render the scene at another
size get a picture built for that size.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QPointF, QRectF
from PySide6.QtGui import QImage, QPainter

#: (x0, x1, y0, y1, width, height, column) -> a (height, width) uint8 picture of colour
#: indices; ``column``: the index of its first column on the item's column grid (for patterns
#: that must continue across a pan, such as dashes: exact, where x0 / dx is not)
Build = Callable[[float, float, float, float, int, int, int], np.ndarray]


class RasterItem(pg.GraphicsObject):
    """An indexed picture (colour table ``colours``, ARGB) over the view rectangle it is given.

    The picture's columns lie on a grid fixed by its first build (``anchor`` + c * ``dx``): a pan
    at the same scale moves the grid by whole columns, keeps the columns it already has and
    computes only the ones that came into view (plus one beside them, so the seam is joined like
    any other column). A zoom, a resize or new data builds it anew.
    """

    def __init__(self, build: Build, colours: list[int]) -> None:
        super().__init__()
        self._build = build
        self._colours = colours
        self._rect = QRectF()
        self._image: QImage | None = None
        #: the last built colour indices, (height, width) uint8 (tests, the bench)
        self.picture: np.ndarray | None = None
        #: anchor, dx, y0, y1, w, h, version, first column's index on the grid
        self._grid: tuple[float, float, float, float, int, int, int, int] | None = None
        self.version = 0
        self.builds = 0  # full builds
        self.scrolls = 0  # pans served by shifting the picture

    def set_view(self, rect: QRectF) -> None:
        """The view rectangle (data coordinates) the picture covers; repaint."""
        if rect != self._rect:
            self.prepareGeometryChange()
            self._rect = QRectF(rect)
        self.update()

    def invalidate(self) -> None:
        """The data drawn changed (nodes loaded or shown): rebuild at the next paint."""
        self.version += 1
        self.update()

    def boundingRect(self) -> QRectF:  # noqa: N802 (Qt override)
        return QRectF(self._rect)

    def paint(self, painter: QPainter, *_args: Any) -> None:
        r = self._rect
        if r.isEmpty():
            return
        dev = painter.worldTransform().mapRect(r)  # device coordinates (y flipped: normalised)
        dpr = painter.device().devicePixelRatioF() if painter.device() is not None else 1.0
        w, h = round(dev.width() * dpr), round(dev.height() * dpr)
        if w < 1 or h < 1:
            return
        self._update_picture(r.left(), r.right(), r.top(), r.bottom(), w, h)
        assert self._grid is not None and self._image is not None
        anchor, dx = self._grid[0], self._grid[1]
        self._image.setDevicePixelRatio(dpr)
        at = painter.worldTransform().mapRect(QRectF(anchor, r.top(), w * dx, r.height()))
        painter.save()
        painter.resetTransform()  # a blit at whole device pixels, not a transformed draw
        painter.drawImage(QPointF(round(at.left()), round(at.top())), self._image)
        painter.restore()

    def _update_picture(self, x0: float, x1: float, y0: float, y1: float, w: int, h: int) -> None:
        dx = (x1 - x0) / w
        g = self._grid
        same = (g is not None and self.picture is not None and g[2:7] == (y0, y1, w, h, self.version)
                and abs(g[1] - dx) <= 1e-9 * abs(dx))  # fmt: skip
        if same and g is not None and self.picture is not None:
            k = round((x0 - g[0]) / g[1])
            if k == 0:
                return
            if abs(k) < w - 2:
                self._scroll(k, g[0] + k * g[1], g[1], y0, y1, w, h, g[7] + k)
                return
        self.picture = self._build(x0, x1, y0, y1, w, h, 0)
        self.builds += 1
        self._grid = (x0, dx, y0, y1, w, h, self.version, 0)
        self._to_image()

    def _scroll(self, k: int, anchor: float, dx: float, y0: float, y1: float, w: int, h: int, col0: int) -> None:
        """Shift the picture by k columns and build the columns that came into view."""
        old = self.picture
        assert old is not None
        pic = np.empty_like(old)
        if k > 0:  # panned right: new columns at the right; rebuild the old last one too
            pic[:, : w - k] = old[:, k:]
            a, b, keep = w - k - 2, w, slice(1, None)
        else:
            pic[:, -k:] = old[:, : w + k]
            a, b, keep = 0, -k + 2, slice(None, -1)
        strip = self._build(anchor + a * dx, anchor + b * dx, y0, y1, b - a, h, col0 + a)
        pic[:, a + (1 if k > 0 else 0) : b - (0 if k > 0 else 1)] = strip[:, keep]
        self.picture = pic
        self.scrolls += 1
        self._grid = (anchor, dx, y0, y1, w, h, self.version, col0)
        self._to_image()

    def _to_image(self) -> None:
        pic = np.ascontiguousarray(self.picture, np.uint8)
        h, w = pic.shape
        img = QImage(pic.data, w, h, w, QImage.Format.Format_Indexed8)
        img.setColorTable(self._colours)
        # a copy that owns its pixels, in the format the raster engine blends fastest
        self._image = img.convertToFormat(QImage.Format.Format_ARGB32_Premultiplied)
