"""``python -m shared.service.probe URL``: exit 0 when ``URL`` answers 200, else 1.

The container healthcheck of compose/ (the images have Python, not curl): pointed at a
service's ``/ready`` it passes only while the service is ready to take work.
"""

from __future__ import annotations

import sys
import urllib.error
import urllib.request


def probe(url: str, timeout: float = 3.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return int(resp.status) == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m shared.service.probe URL", file=sys.stderr)
        return 2
    return 0 if probe(args[0]) else 1


if __name__ == "__main__":
    sys.exit(main())
