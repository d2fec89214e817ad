"""Reading and writing files safely: atomic writes, JSON lines, the one image decoder,
state dicts, and quiet pretrained-weight downloads. Everything here treats files as data."""

from __future__ import annotations

import contextlib
import importlib.resources
import json
import logging
import os
import re
import stat
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zoo.errors import ZooError, clip, first_line

if TYPE_CHECKING:
    from torch import Tensor

# The most pixels an image file may claim: PIL's own decompression-bomb threshold
# (Image.MAX_IMAGE_PIXELS, 89,478,485: 256 MiB at 3 bytes a pixel), far above any photo.
# PIL only warns between it and twice it; we refuse, from the header, before decoding.
MAX_IMAGE_PIXELS = 89_478_485


def regular_stat(path: Path) -> os.stat_result:
    """stat `path` and refuse anything but a regular file before it is opened: a FIFO would
    block and /dev/zero would be read forever. OSError (not found, ...) is the caller's."""
    st = path.stat()
    if not stat.S_ISREG(st.st_mode):
        raise ZooError(f"{clip(str(path))}: not a regular file; give the path of a file")
    return st


def atomic_write(path: Path, data: bytes | str) -> None:
    """Write to a temp file in the same folder, fsync, then rename: readers never see half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual permissions
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, obj: Any) -> None:
    atomic_write(path, json.dumps(obj, indent=2, default=str) + "\n")


def append_jsonl(path: Path, row: dict[str, Any]) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Rows of a metrics file; a torn last line (a kill mid-write) is ignored."""
    rows = []
    if not Path(path).exists():
        return rows
    for line in Path(path).read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def read_json(path: Path, limit: int = 1 << 24) -> dict[str, Any]:
    """A JSON object from a run folder (summary, env, eval results, a sweep's order); {}
    when it is missing, not a regular file, over `limit` bytes, torn or not an object: a run
    folder may be half written or hostile, and a report or sweep reads past such files."""
    try:
        if regular_stat(path).st_size > limit:
            return {}
        with open(path, "rb") as f:
            data = json.loads(f.read(limit + 1))
    except (OSError, ZooError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _too_big(path: str | Path, pixels: int | None, size: str = "") -> ZooError:
    """The one message for an image over MAX_IMAGE_PIXELS, whether zoo saw it or PIL (which
    refuses an image of over twice its own limit before zoo can look)."""
    claimed = f" ({pixels / 1e6:.0f} megapixels)" if pixels else ""
    return ZooError(f"{path}: {size}image{claimed} is over the {MAX_IMAGE_PIXELS / 1e6:.0f}-"
                    "megapixel limit (zoo.io.MAX_IMAGE_PIXELS); downscale or delete the file")


def open_rgb(path: str | Path, *, draft: int | None = None, exif: bool = False) -> Any:
    """An image file as an 8-bit RGB PIL image: the one image decoder of zoo and its tools.

    Files claiming more than MAX_IMAGE_PIXELS are refused from their header, before any
    decoding. 16-bit greyscale (PIL modes I;16*, and I as older Pillow opens 16-bit PNGs)
    is scaled from 0-65535 to 0-255: PIL's own convert() clips it at 255 (nearly white).
    Transparent pixels become white, as a viewer shows them. `draft` lets JPEGs decode at a
    reduced scale still at least that size; `exif` applies the EXIF orientation (phone
    photos). Anything unreadable is a one-line ZooError naming the file.
    """
    import numpy as np
    from PIL import Image, ImageOps

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # checked below
            with Image.open(path) as im:
                if im.width * im.height > MAX_IMAGE_PIXELS:
                    raise _too_big(path, im.width * im.height, f"{im.width}x{im.height} ")
                if draft:
                    im.draft("RGB", (draft, draft))
                img = ImageOps.exif_transpose(im) if exif else im
                if img.mode == "I" or img.mode.startswith("I;16"):
                    deep = np.asarray(img).astype(np.int64).clip(0, 65535)
                    img = Image.fromarray(((deep * 255 + 32767) // 65535).astype(np.uint8))
                if img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info:
                    rgba = img.convert("RGBA")
                    img = Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba)
                return img.convert("RGB")
    except Image.DecompressionBombError as e:  # over twice PIL's limit: PIL refuses first
        claimed = re.search(r"\((\d+) pixels\)", str(e))
        raise _too_big(path, int(claimed[1]) if claimed else None) from e
    except (OSError, ValueError) as e:
        raise ZooError(f"{path}: cannot read image ({first_line(e)}); fix or delete the file") from e


HUB_CONNECT_TIMEOUT = 3.0  # seconds; a reachable hub or proxy accepts a connection in far less


def hub_address() -> tuple[str, int]:
    """Where a hub download connects first: the host of huggingface_hub's endpoint
    (HF_ENDPOINT), or the proxy the environment names for it."""
    import urllib.request
    from urllib.parse import urlsplit

    from huggingface_hub import constants

    url = urlsplit(constants.ENDPOINT)
    proxies = urllib.request.getproxies()
    proxy = proxies.get(url.scheme) or proxies.get("all")
    if proxy and not urllib.request.proxy_bypass(url.hostname or ""):
        url = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    return url.hostname or "", url.port or (443 if url.scheme == "https" else 80)


def reachable(host: str, port: int, timeout: float = HUB_CONNECT_TIMEOUT) -> bool:
    """Whether a TCP connection to host:port opens within `timeout` seconds."""
    import socket

    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError:  # no DNS, refused, unreachable, timed out
        return False
    return True


@contextlib.contextmanager
def quiet_hub_retries() -> Iterator[None]:
    """Around a pretrained download: huggingface_hub's retries, quiet and, offline, not made.

    Its line per retry is held back (the failure is reported once, as a one-line error);
    and where the hub cannot be reached within HUB_CONNECT_TIMEOUT, it runs in offline mode
    (HF_HUB_OFFLINE) for the call: weights in its cache load at once, and others fail at
    once rather than after about 50 s of retries (measured: `zoo viz timm:test_vit` offline).
    """
    from huggingface_hub import constants

    hub = logging.getLogger("huggingface_hub")
    level, offline = hub.level, constants.HF_HUB_OFFLINE
    hub.setLevel(logging.ERROR)
    if not offline:
        constants.HF_HUB_OFFLINE = not reachable(*hub_address())
    try:
        yield
    finally:
        hub.setLevel(level)
        constants.HF_HUB_OFFLINE = offline


def read_state_dict(path: str | Path, what: str = "--weights") -> dict[str, Tensor]:
    """A state dict from .safetensors, or from .pth/.bin through torch.load(weights_only=True);
    errors name `what` (the option or recipe key the path came from) and the path."""
    import torch

    p = Path(path)
    if not p.is_file():
        raise ZooError(f"{what} {path}: no such file")
    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(p))
        else:
            state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # safetensors, pickle and zip errors have no common base
        raise ZooError(f"{what} {path}: not a readable state dict ({type(e).__name__}); "
                       "save one with torch.save(model.state_dict(), FILE)") from e
    if not isinstance(state, dict):
        raise ZooError(f"{what} {path}: expected a state dict, got {type(state).__name__}")
    return state


def packaged_dir(package: str, folder: str) -> Path:
    """A folder shipped inside zoo: `package` (e.g. zoo._plugins) when installed, else the
    checkout's `folder` beside zoo/ (a source tree that was never installed)."""
    try:
        return Path(str(importlib.resources.files(package)))
    except ModuleNotFoundError:
        return Path(__file__).resolve().parents[1] / folder
