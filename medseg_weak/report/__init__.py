"""The HTML report: one static page per run (overlays, per-hospital tables, plots, provenance).

``ReportStage`` (stage.py) writes ``<run>/report/index.html``; ``sections/`` holds one builder per
part of the page, ``gallery.py`` the overlay pictures, ``templates/`` the page itself."""
