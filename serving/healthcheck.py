"""Container health check: exit 0 when the local service answers ``GET /readyz`` with 200.

    python -m serving.healthcheck [URL]

Used by the Dockerfile's ``HEALTHCHECK`` (the image has no curl). The default URL is built from
``CARDSENSE_PORT`` (8000).
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request


def main(argv: list[str] | None = None) -> int:
    """Probe ``/readyz``; returns 0 if ready, 1 otherwise (with the reason on stderr)."""
    argv = sys.argv[1:] if argv is None else argv
    url = argv[0] if argv else f"http://127.0.0.1:{os.environ.get('CARDSENSE_PORT', '8000')}/readyz"
    try:
        with urllib.request.urlopen(url, timeout=4) as response:
            if response.status == 200:
                return 0
            print(f"{url}: HTTP {response.status}", file=sys.stderr)
    except (urllib.error.URLError, OSError) as exc:
        print(f"{url}: {exc}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
