"""openmosixmigmon: the graphics view - drag a square onto a penguin (mouse press, move and release
inside the view, no QDrag: it works on every platform, offscreen too, and a test drives it with
qtbot), double-click a square to send it home, tooltips, wheel zoom, pan on empty space.
"""

from __future__ import annotations

from PySide6.QtCore import QEvent, QPoint, QPointF, Qt, Signal
from PySide6.QtGui import QHelpEvent, QMouseEvent, QPainter, QResizeEvent, QWheelEvent
from PySide6.QtWidgets import QGraphicsView, QToolTip, QWidget

from omview.migmon.scene import MigScene

#: pixels the pointer must travel before a press on a square becomes a drag
DRAG_START = 4


class MigView(QGraphicsView):
    """Shows a MigScene; turns pointer gestures into drop and send-home requests."""

    sig_dropped = Signal(int, int)
    """(key, node): a square was dropped on a node's penguin (node -1: on no node)."""
    sig_home_requested = Signal(int)
    """key: a square was double-clicked."""

    def __init__(self, scene: MigScene, parent: QWidget | None = None) -> None:
        super().__init__(scene, parent)
        self.mig = scene
        self.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        self.setDragMode(QGraphicsView.DragMode.ScrollHandDrag)
        self.setViewportUpdateMode(QGraphicsView.ViewportUpdateMode.MinimalViewportUpdate)  # flights: a few small regions per frame
        self.setOptimizationFlag(QGraphicsView.OptimizationFlag.DontSavePainterState, True)
        self.setTransformationAnchor(QGraphicsView.ViewportAnchor.AnchorUnderMouse)
        self.setMouseTracking(True)
        self.auto_fit = True  # until the user zooms: the whole cluster fits the window
        self._drag: int | None = None
        self._press = QPoint()
        self._dragging = False
        scene.sceneRectChanged.connect(lambda _r: self.fit())

    @property
    def dragging(self) -> int | None:
        return self._drag if self._dragging else None

    def fit(self) -> None:
        if self.auto_fit and not self.mig.sceneRect().isEmpty():
            self.fitInView(self.mig.sceneRect(), Qt.AspectRatioMode.KeepAspectRatio)

    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        self.fit()

    def wheelEvent(self, event: QWheelEvent) -> None:
        self.auto_fit = False
        factor = 1.0015 ** event.angleDelta().y()
        self.scale(factor, factor)

    def mouseDoubleClickEvent(self, event: QMouseEvent) -> None:
        key = self.mig.key_at(self.mapToScene(event.position().toPoint()))
        if key is not None and event.button() == Qt.MouseButton.LeftButton:
            self.sig_home_requested.emit(key)
            event.accept()
            return
        self.auto_fit = True  # double-click on empty space: fit the cluster again
        self.fit()

    def mousePressEvent(self, event: QMouseEvent) -> None:
        if event.button() == Qt.MouseButton.LeftButton:
            key = self.mig.key_at(self.mapToScene(event.position().toPoint()))
            if key is not None:
                self._drag, self._press, self._dragging = key, event.position().toPoint(), False
                event.accept()
                return
        super().mousePressEvent(event)

    def mouseMoveEvent(self, event: QMouseEvent) -> None:
        if self._drag is None:
            super().mouseMoveEvent(event)
            return
        pos = event.position().toPoint()
        if not self._dragging and (pos - self._press).manhattanLength() < DRAG_START:
            return
        self._dragging = True
        scene_pos = self.mapToScene(pos)
        self.mig.hold(self._drag, QPointF(scene_pos))
        self.mig.highlight(self.mig.node_at(scene_pos))
        self.viewport().setCursor(Qt.CursorShape.ClosedHandCursor)
        event.accept()

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:
        if self._drag is None:
            super().mouseReleaseEvent(event)
            return
        key, dragged = self._drag, self._dragging
        self._drag, self._dragging = None, False
        self.viewport().unsetCursor()
        self.mig.highlight(None)
        if dragged:
            node = self.mig.node_at(self.mapToScene(event.position().toPoint()))
            self.sig_dropped.emit(key, -1 if node is None else node)
        event.accept()

    def viewportEvent(self, event: QEvent) -> bool:
        if event.type() == QEvent.Type.ToolTip and isinstance(event, QHelpEvent):
            text = self.tooltip_at(QPointF(self.mapToScene(event.pos())))
            if text:
                QToolTip.showText(event.globalPos(), text, self.viewport())
            else:
                QToolTip.hideText()
                event.ignore()
            return True
        return super().viewportEvent(event)

    def tooltip_at(self, scene_pos: QPointF) -> str:
        """What the tooltip says over ``scene_pos``: a square's process, else a node."""
        key = self.mig.key_at(scene_pos)
        if key is not None and key in self.mig.marks:
            return self.mig.marks[key].tooltip()
        node = self.mig.node_at(scene_pos)
        if node is not None:
            n = self.mig.nodes[node].node
            return (f"node {n.id} ({n.address}{', the node migmon watches' if node == self.mig.entry else ''})\n"
                    f"{n.status}, load {n.load:.0f}, {n.cpus} CPUs, speed {n.speed}\n"
                    "drop a process here to migrate it")  # fmt: skip
        return ""
