"""L5 window programs openmosixanalyzer and openmosixhistory: browse the collector's history.

They read the collector's files only through ``omview.model.records`` (never the collector
package). ``data`` holds the Qt-free part (numpy arrays, find-out statistics, time parsing), so
``--find-out`` and ``--at`` answer without starting Qt.
"""
