"""The training side of the OCR service: jobs, ZIP safety, datasets, the trainer process."""
