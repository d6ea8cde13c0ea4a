"""``rtq_nb.views``: pandas views of a queue (kept here as a public import path; the adapter
lives in :mod:`rtq_nb.notebook.views`)."""

from rtq_nb.notebook.views import HISTORY_COLUMNS, clients, history, pending, workers

__all__ = ["HISTORY_COLUMNS", "clients", "history", "pending", "workers"]
