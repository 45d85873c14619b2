"""py-spiffe (grpc-python) against keycard's Workload API.

Reads SPIFFE_ENDPOINT_SOCKET. Prints one JSON object per line for the Rust
test to check; after the first streamed X.509 context it waits (bounded) for
a context whose default SVID has another serial (the test rotates it).
"""
import json
import sys
import threading
import time

from spiffe import JwtBundleSet, WorkloadApiClient, X509Source  # noqa: F401


def out(**kw):
    print(json.dumps(kw), flush=True)


def main():
    with WorkloadApiClient(default_timeout=10) as client:
        svid = client.fetch_x509_svid()
        out(step="svid", spiffe_id=str(svid.spiffe_id), serial=svid.leaf.serial_number)

        bundles = client.fetch_x509_bundles()
        out(step="x509_bundles", tds=sorted(str(b.trust_domain) for b in bundles.bundles))

        jwt = client.fetch_jwt_svid({"svc-a"})
        out(step="jwt", spiffe_id=str(jwt.spiffe_id), audience=sorted(jwt.audience))

        jwt_bundles = client.fetch_jwt_bundles()
        out(
            step="jwt_bundles",
            kids={
                str(b.trust_domain): sorted(b.jwt_authorities.keys())
                for b in jwt_bundles.bundles
            },
        )

        validated = client.validate_jwt_svid(jwt.token, "svc-a")
        out(step="validate", spiffe_id=str(validated.spiffe_id))
        try:
            client.validate_jwt_svid(jwt.token, "svc-b")
            out(step="validate_wrong_audience", refused=False)
        except Exception as e:  # noqa: BLE001 - any refusal is what we want
            out(step="validate_wrong_audience", refused=True, error=type(e).__name__)

        serials = []
        seen = threading.Condition()

        def on_success(ctx):
            with seen:
                serials.append(ctx.default_svid.leaf.serial_number)
                out(step="stream", serial=serials[-1])
                seen.notify_all()

        def on_error(err):
            out(step="stream_error", error=str(err))

        handle = client.stream_x509_contexts(on_success, on_error, retry_connect=False)
        deadline = time.monotonic() + 15
        with seen:
            while len(set(serials)) < 2 and time.monotonic() < deadline:
                seen.wait(timeout=0.5)
        handle.cancel()
        out(step="done", distinct_serials=len(set(serials)))

    # X509Source: the high-level API most Python workloads use.
    source = X509Source(timeout_in_seconds=10)
    try:
        out(step="x509_source", spiffe_id=str(source.get_x509_context().default_svid.spiffe_id))
    finally:
        source.close()


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # noqa: BLE001
        out(step="fatal", error=f"{type(e).__name__}: {e}")
        sys.exit(1)
