"""The dashboard and its JSON API: a FastAPI app over the library (`create_app` in app.py),
one router per page's API, training in worker processes (jobs.py), static pages in static/.
The charts are uPlot 1.6.32 (MIT), vendored in static/vendor: no CDN, it works offline."""
