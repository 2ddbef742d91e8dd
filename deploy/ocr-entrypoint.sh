#!/usr/bin/env bash
# The OCR image's command: check the model store, then become the server.
#
# `python -m ocr_service check-models` validates the settings and the store's folders, and loads
# the segmentation model the workers will use, restoring the packaged one (blla) where the
# configured OCR_SEGMENTATION_MODEL is missing or cannot be loaded. If that fails the container
# stops here, with the reason in its log, instead of serving with a broken model; compose's
# restart policy then tries again and the health check stays red.
set -euo pipefail

python -m ocr_service check-models
exec python -m ocr_service "$@"
