"""A small load generator for ``POST /classify``: requests/s and latency percentiles.

    python -m serving.loadtest http://127.0.0.1:8000 CARDS --concurrency 4 --seconds 10 [--token T]
        [--send png|csv|pair] [--query explain=1] [--requests N]

CARDS is a zip or folder of cards (read with the shared safe reader); each client thread keeps one
keep-alive connection and sends the cards in turn: each card's PNG (or its CSV when it has none), or with
``--send csv`` its CSV, with ``--send pair`` its PNG and CSV together (the dual model). ``--query`` adds a
query string to every request (``explain=1``: the latency of explanations); ``--requests`` stops after that
many requests. Run it on another machine than the service when you can: on the same cores it competes with
the workers.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from http.client import HTTPConnection, HTTPException
from urllib.parse import urlsplit

from serving.routing import card_files
from shared.cards import CardError
from shared.dataset_io import ArchiveError, iter_cards

SENDS = ("png", "csv", "pair")
_BOUNDARY = "cardsense-loadtest-boundary"


def _multipart(png: bytes, csv: bytes) -> tuple[bytes, str]:
    """One card's PNG (field ``file``) and CSV (field ``series``) as a multipart body."""
    parts = []
    for field, name, data, ctype in (("file", "card.png", png, "image/png"), ("series", "card.csv", csv, "text/csv")):
        parts.append(f'--{_BOUNDARY}\r\nContent-Disposition: form-data; name="{field}"; filename="{name}"\r\n'
                     f"Content-Type: {ctype}\r\n\r\n".encode() + data + b"\r\n")
    return b"".join(parts) + f"--{_BOUNDARY}--\r\n".encode(), f"multipart/form-data; boundary={_BOUNDARY}"


def load_cards(source: str, limit: int = 500, send: str = "png") -> list[tuple[bytes, str]]:
    """Up to ``limit`` ``(body, content type)`` requests from a zip or folder of cards.

    Args:
        send: ``png`` (a card's PNG, or its CSV when it has none), ``csv`` (cards with a CSV) or ``pair`` (cards
            with both, sent together).
    """
    cards = []
    with iter_cards(source) as src:
        for card in src:
            try:
                png, csv = card_files(card)
            except CardError:
                continue
            if send == "png":
                cards.append((png, "image/png") if png is not None else (csv, "text/csv"))
            elif send == "csv" and csv is not None:
                cards.append((csv, "text/csv"))
            elif send == "pair" and png is not None and csv is not None:
                cards.append(_multipart(png, csv))
            if len(cards) >= limit:
                break
    return cards


def run(url: str, cards: list[tuple[bytes, str]], concurrency: int, seconds: float, token: str | None = None,
        query: str = "", requests: int | None = None) -> dict:
    """Send ``/classify`` requests from ``concurrency`` threads for ``seconds`` (or until ``requests`` were
    sent); return the statistics."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    path = (parts.path.rstrip("/") or "") + "/classify" + (f"?{query.lstrip('?')}" if query else "")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds

    sent = [0]

    def more() -> bool:
        with lock:
            if requests is not None and sent[0] >= requests:
                return False
            sent[0] += 1
        return time.perf_counter() < deadline

    def client(offset: int) -> None:
        conn = HTTPConnection(host, port, timeout=60)
        i = offset
        while more():
            data, ctype = cards[i % len(cards)]
            i += 1
            started = time.perf_counter()
            try:
                conn.request("POST", path, body=data, headers={**headers, "Content-Type": ctype})
                response = conn.getresponse()
                response.read()
                status = response.status
            except (OSError, HTTPException):
                conn.close()
                conn = HTTPConnection(host, port, timeout=60)
                status = 0
            elapsed = time.perf_counter() - started
            with lock:
                latencies.append(elapsed)
                statuses[status] = statuses.get(status, 0) + 1
        conn.close()

    threads = [threading.Thread(target=client, args=(k * 7,)) for k in range(concurrency)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    latencies.sort()

    def pct(q: float) -> float:
        return round(1000 * latencies[min(len(latencies) - 1, int(q * len(latencies)))], 2) if latencies else 0.0

    return {
        "requests": len(latencies),
        "requests_per_s": round(len(latencies) / wall, 1),
        "p50_ms": pct(0.50), "p95_ms": pct(0.95), "p99_ms": pct(0.99),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "concurrency": concurrency,
        **({"query": query} if query else {}),
    }


def main(argv: list[str] | None = None) -> int:
    """Command line: print the statistics as one JSON line; exit 1 if any request failed."""
    parser = argparse.ArgumentParser(prog="python -m serving.loadtest", description=__doc__.split("\n\n")[0])
    parser.add_argument("url", help="service base URL, e.g. http://127.0.0.1:8000")
    parser.add_argument("cards", help="zip or folder of cards to send")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--token", default=None, help="API token, if the service needs one")
    parser.add_argument("--send", choices=SENDS, default="png",
                        help="what to send of each card: its PNG (or CSV when it has none), its CSV, or both (pair)")
    parser.add_argument("--query", default="", help="query string for every request, e.g. explain=1")
    parser.add_argument("--requests", type=int, default=None, help="stop after this many requests")
    args = parser.parse_args(argv)
    try:
        cards = load_cards(args.cards, send=args.send)
    except ArchiveError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not cards:
        print(f"error: no readable cards in {args.cards}", file=sys.stderr)
        return 2
    stats = run(args.url, cards, args.concurrency, args.seconds, args.token, args.query, args.requests)
    print(json.dumps(stats))
    return 0 if set(stats["statuses"]) == {"200"} else 1


if __name__ == "__main__":
    sys.exit(main())
