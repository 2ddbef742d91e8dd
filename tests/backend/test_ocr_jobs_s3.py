"""OCR jobs whose originals live in S3 (moto's S3 server in server mode, the issue's stand-in for MinIO)."""

from __future__ import annotations

import pytest

from backend.settings import Settings
from backend.storage_s3 import S3Storage
from tests.backend.conftest import Actors, services_of
from tests.backend.ocr_jobs import drain, job_of, page_events, runner, upload
from tests.backend.ocr_standin import Drip, Reply, StandIn, error_body
from tests.backend.s3_standin import MotoS3, free_port

STREAM = "POST /ocr/stream"
S3_ONLY = pytest.mark.parametrize("storage_kind", ["s3"], indirect=True)


def _start(actors: Actors, document_id: int) -> int:
    response = actors.client.post(f"/api/documents/{document_id}/ocr", headers=actors.archivist)
    assert response.status_code == 202, response.text
    return int(response.json()["jobId"])


@S3_ONLY
def test_the_original_streams_from_s3_to_the_ocr_service_also_on_a_retried_attempt(
    actors: Actors, standin: StandIn
) -> None:
    document_id = upload(actors, 5, pages=2)
    sha256 = actors.client.get(f"/api/documents/{document_id}", headers=actors.archivist).json()["sha256"]
    # The first attempt is answered 503 after the whole upload: the retry must send the file from its start.
    standin.service.plan(STREAM, Reply(503, error_body("MODELS_NOT_READY")), Drip(page_events(2)))
    job_id = _start(actors, document_id)
    drain(runner(actors.client, standin.url, attempts=2))
    assert job_of(actors, job_id)["status"] == "DONE"
    assert [(seen.file_sha256, seen.path) for seen in standin.service.seen] == [(sha256, "/ocr/stream")] * 2


@S3_ONLY
def test_a_store_that_does_not_answer_fails_the_job_with_storage_unavailable(
    actors: Actors, standin: StandIn, moto_s3: MotoS3
) -> None:
    document_id = upload(actors, 6, pages=1)
    job_id = _start(actors, document_id)
    services = services_of(actors.client)
    bucket = services.settings.s3_bucket
    dead = f"http://127.0.0.1:{free_port()}"
    services.documents.storage = S3Storage.from_settings(
        Settings(**moto_s3.settings(bucket, s3_endpoint_url=dead, s3_max_attempts=1))
    )
    drain(runner(actors.client, standin.url))
    job = job_of(actors, job_id)
    assert (job["status"], job["errorCode"]) == ("FAILED", "STORAGE_UNAVAILABLE")
    assert dead not in job["errorMessage"]
    assert standin.service.seen == []
