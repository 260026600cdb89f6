"""Which request bodies are JSON: one sent without `Content-Type: application/json` is not read as JSON.

`curl -d '{...}'` without `-H 'Content-Type: application/json'` sends the type
application/x-www-form-urlencoded; FastAPI then does not parse the body as JSON, and the client
was told "the request body must be a JSON object" about a body that is one. The type is not
silently accepted instead: form and text/plain bodies are what a web page may send to
127.0.0.1 from any origin without a CORS preflight, so reading them as JSON would let any page
the user opens start generations on a local server. The error names the header instead.
"""

from __future__ import annotations

from .schema import error_body


def is_json_type(content_type: str | None) -> bool:
    """application/json, or any application/*+json. No header at all is not JSON either: FastAPI
    reads a body without one as bytes (strict_content_type), for the same reason as above (a page
    may send a typeless Blob to another origin without a preflight)."""
    if not content_type:
        return False
    kind = content_type.split(";", 1)[0].strip().lower()
    return kind == "application/json" or (kind.startswith("application/") and kind.endswith("+json"))


def not_json_content_type(content_type: str | None) -> dict | None:
    """The error body for a request whose Content-Type is not JSON (None when it is)."""
    if is_json_type(content_type):
        return None
    sent = f"as {content_type.split(';', 1)[0].strip()[:80]!r}" if content_type else "without a Content-Type header"
    return error_body(
        f"the request body was sent {sent}, so it is not read as JSON: send the header "
        "'Content-Type: application/json' (curl: -H 'Content-Type: application/json')",
        code="unsupported_media_type",
    )
