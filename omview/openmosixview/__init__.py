"""openmosixview, the suite's main window: one row per node, node dialogs, advanced execution,
the Collector menu. Run it with ``openmosixview`` (``omview.openmosixview.app:main``).

It imports ``omview.gui`` (links, session, connection, settings, prompts) and the model, never
another window of the suite; ``omview.gui`` never imports it.
"""
