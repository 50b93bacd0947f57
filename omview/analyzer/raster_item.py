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

#: (x0, x1, y0, y1, width, height) -> a (height, width) uint8 picture of colour indices
Build = Callable[[float, float, float, float, int, int], np.ndarray]


class RasterItem(pg.GraphicsObject):
    """An indexed picture (colour table ``colours``, ARGB) over the view rectangle it is given."""

    def __init__(self, build: Build, colours: list[int]) -> None:
        super().__init__()
        self._build = build
        self._colours = colours
        self._rect = QRectF()
        self._key: tuple[float, ...] | None = None
        self._image: QImage | None = None
        self.picture: np.ndarray | None = None  # the last built indices (tests, the bench)
        self.version = 0
        self.builds = 0

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
        key = (r.left(), r.right(), r.top(), r.bottom(), float(w), float(h), float(self.version))
        if key != self._key or self._image is None:
            self._image = self._render(r.left(), r.right(), r.top(), r.bottom(), w, h)
            self._image.setDevicePixelRatio(dpr)
            self._key = key
        painter.save()
        painter.resetTransform()  # a blit at whole device pixels, not a transformed draw
        painter.drawImage(QPointF(round(dev.left()), round(dev.top())), self._image)
        painter.restore()

    def _render(self, x0: float, x1: float, y0: float, y1: float, w: int, h: int) -> QImage:
        pic = np.ascontiguousarray(self._build(x0, x1, y0, y1, w, h), np.uint8)
        self.picture = pic
        self.builds += 1
        img = QImage(pic.data, w, h, w, QImage.Format.Format_Indexed8)
        img.setColorTable(self._colours)
        # a copy that owns its pixels, in the format the raster engine blends fastest
        return img.convertToFormat(QImage.Format.Format_ARGB32_Premultiplied)
