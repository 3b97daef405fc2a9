"""The admin HTTP API: FastAPI on uvicorn over the service layer (service/core.py)."""
