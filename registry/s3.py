"""S3 for MLflow's artifacts through the MinIO SDK (MinIO, SeaweedFS or any S3).

Yunnao registers :class:`MinioArtifactRepository` as MLflow's artifact repository for
``s3://`` URIs (entry point ``mlflow.artifact_repository``), so everything that moves
model artifacts — an MLflow tracking server started with
``--artifacts-destination s3://bucket/prefix``, or a client writing straight to S3 —
does it with the MinIO client, configured by the variables MLflow users already know:

- ``MLFLOW_S3_ENDPOINT_URL``: the S3 endpoint, e.g. ``http://minio.internal:9000``
  (default ``https://s3.amazonaws.com``);
- ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``,
  ``AWS_DEFAULT_REGION``.
"""

from __future__ import annotations

import os
import posixpath
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import certifi
import urllib3
from minio import Minio
from minio.deleteobjects import DeleteObject
from mlflow.entities import FileInfo
from mlflow.store.artifact.artifact_repo import ArtifactRepository


def client_from_env() -> Minio:
    """A MinIO client for the endpoint and credentials in the environment."""
    endpoint = os.environ.get("MLFLOW_S3_ENDPOINT_URL", "https://s3.amazonaws.com")
    url = urlparse(endpoint if "://" in endpoint else f"https://{endpoint}")
    # Fail within seconds when the store is down (the SDK's default retries for minutes
    # in total behind MLflow's own retries); large uploads still get a long read timeout.
    http = urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=5, read=300),
        maxsize=10,
        retries=urllib3.Retry(total=2, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504]),
        ca_certs=os.environ.get("SSL_CERT_FILE") or certifi.where(),
    )
    return Minio(
        url.netloc,
        access_key=os.environ.get("AWS_ACCESS_KEY_ID"),
        secret_key=os.environ.get("AWS_SECRET_ACCESS_KEY"),
        session_token=os.environ.get("AWS_SESSION_TOKEN"),
        region=os.environ.get("AWS_DEFAULT_REGION"),
        secure=url.scheme == "https",
        http_client=http,
    )


def split_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` -> ("bucket", "some/prefix")."""
    parsed = urlparse(uri)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise ValueError(f"not an s3://bucket/prefix URI: {uri!r}")
    return parsed.netloc, parsed.path.strip("/")


class MinioArtifactRepository(ArtifactRepository):
    """MLflow artifacts under one ``s3://bucket/prefix``, through the MinIO SDK."""

    def __init__(
        self,
        artifact_uri: str,
        tracking_uri: str | None = None,
        registry_uri: str | None = None,
        **_: Any,
    ) -> None:
        super().__init__(artifact_uri, tracking_uri=tracking_uri, registry_uri=registry_uri)
        self.bucket, self.prefix = split_s3_uri(artifact_uri)
        self.client = client_from_env()

    def _key(self, *parts: str | None) -> str:
        return posixpath.join(self.prefix, *[p.strip("/") for p in parts if p])

    def log_artifact(self, local_file: str, artifact_path: str | None = None) -> None:
        name = Path(local_file).name
        self.client.fput_object(self.bucket, self._key(artifact_path, name), local_file)

    def log_artifacts(self, local_dir: str, artifact_path: str | None = None) -> None:
        root = Path(local_dir)
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            rel = path.relative_to(root).as_posix()
            self.client.fput_object(self.bucket, self._key(artifact_path, rel), str(path))

    def list_artifacts(self, path: str | None = None) -> list[FileInfo]:
        base = self._key(path)
        listing_prefix = base.rstrip("/") + "/" if base else ""
        out = []
        for obj in self.client.list_objects(self.bucket, prefix=listing_prefix, recursive=False):
            rel = posixpath.relpath(obj.object_name.rstrip("/"), self.prefix or ".")
            if obj.is_dir:
                out.append(FileInfo(rel, True, None))
            else:
                out.append(FileInfo(rel, False, obj.size))
        return sorted(out, key=lambda f: f.path)

    def _download_file(self, remote_file_path: str, local_path: str) -> None:
        self.client.fget_object(self.bucket, self._key(remote_file_path), local_path)

    def delete_artifacts(self, artifact_path: str | None = None) -> None:
        base = self._key(artifact_path)
        prefix = base.rstrip("/") + "/" if base else ""
        names = [
            o.object_name
            for o in self.client.list_objects(self.bucket, prefix=prefix, recursive=True)
        ]
        if base:
            names.append(base)  # the path may name a single object
        errors = list(self.client.remove_objects(self.bucket, [DeleteObject(n) for n in names]))
        failed = [e for e in errors if getattr(e, "code", "") != "NoSuchKey"]
        if failed:
            raise OSError(
                f"could not delete {len(failed)} objects under s3://{self.bucket}/{prefix}: "
                f"{failed[0]}"
            )
