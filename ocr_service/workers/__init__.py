"""The OCR worker processes: what runs inside one (``process``), the messages between it and
the service (``messages``), and the parent's supervision of all of them (``supervisor``)."""
