"""A local S3 API for the backup tests: moto's server mode (``moto[s3]``, test group only).

It stands in for hosted S3-compatible storage the way the OpenMeter and Stripe stand-ins do
for their APIs: boto3 talks to it over HTTP on a free loopback port, with the real S3 wire
protocol (signatures, XML listings, multi-object delete).
"""

from __future__ import annotations

import logging
from typing import Any, Self

from stripe_bridge.ops.natsserver import free_port

#: Credentials the stand-in accepts (moto accepts any; boto3 needs some to sign).
ACCESS_KEY = "backup-test-key"
SECRET_KEY = "backup-test-secret"
REGION = "us-east-1"


class S3StandIn:
    """moto's S3 server on 127.0.0.1, started and stopped with the ``with`` block."""

    def __init__(self, port: int | None = None) -> None:
        from moto.server import ThreadedMotoServer

        self.port = port or free_port()
        # werkzeug logs one line per request to stderr: tests assert on objects, not logs.
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)

    @property
    def url(self) -> str:
        """The endpoint URL to give boto3."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        """Environment variables that point boto3 at this stand-in."""
        return {
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_DEFAULT_REGION": REGION,
        }

    def client(self) -> Any:
        """A boto3 S3 client for this stand-in."""
        import boto3  # type: ignore[import-untyped]

        return boto3.client(
            "s3",
            endpoint_url=self.url,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name=REGION,
        )

    def start(self) -> Self:
        """Serve until ``stop``."""
        self._server.start()
        return self

    def stop(self) -> None:
        """Shut the server down."""
        self._server.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
