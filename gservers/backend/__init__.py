"""The backend program: ``python -m gservers.backend PORT``."""
