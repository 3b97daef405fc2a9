"""One module per vendor: what to send (``render``) and what its answer means (``judge``)."""
