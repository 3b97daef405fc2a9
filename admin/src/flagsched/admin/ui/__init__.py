"""The admin web UI: server-rendered Jinja2 pages with htmx, mounted under ``/ui`` by
:func:`flagsched.admin.ui.app.mount`. README.md in this folder says how to add a page."""
