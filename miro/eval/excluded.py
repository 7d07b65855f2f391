"""One policy for images an evaluator cannot read, the same in every evaluator (GenEval ``evaluate``, reward
metrics, FID, sliders): **exclude and report**.

An unreadable image (zero bytes, truncated, not an image, missing) is left out of every number (it is not a
wrong answer of the model, not a NaN in a mean, not a stop), counted, listed with its reason in the command's
output file, and printed as one line::

    geneval evaluate: 2 of 40 images excluded (unreadable), left out of every score: 00003/samples/0001.png (truncated), ...

Reasons are short and reproducible (``truncated``, ``not_an_image``, ``missing``, ...): no Python object
addresses.  docs/eval.md ("Unreadable images") documents it.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from miro.data.images import BadImage, decode_image, stable_text

POLICY = "exclude and report"


def read_image(path: str | Path) -> tuple[Image.Image | None, str | None]:
    """(RGB image, None), or (None, reason) for an image that cannot be read."""
    try:
        return decode_image(Path(path).read_bytes()), None
    except BadImage as err:
        return None, err.reason
    except FileNotFoundError:
        return None, "missing"
    except OSError as err:
        return None, f"unreadable ({stable_text(err.strerror or type(err).__name__)})"


def excluded_line(stage: str, excluded: list[dict], total: int, show: int = 5) -> str | None:
    """The one line printed for ``excluded`` ([{"path", "reason"}]); None when nothing was excluded."""
    if not excluded:
        return None
    shown = ", ".join(f"{e['path']} ({e['reason']})" for e in excluded[:show])
    more = f", ... ({len(excluded) - show} more)" if len(excluded) > show else ""
    return f"{stage}: {len(excluded)} of {total} images excluded (unreadable), left out of every score: {shown}{more}"


def report_excluded(stage: str, excluded: list[dict], total: int) -> str | None:
    """Print the line of ``excluded_line`` (to stdout, beside the scores it qualifies)."""
    line = excluded_line(stage, excluded, total)
    if line:
        print(line, flush=True)
    return line
