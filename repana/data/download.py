"""Download dataset archives: resume or restart partial files, verify checksums, extract atomically.

``download_omniglot(root)`` fetches the official Omniglot archives into ``<root>/omniglot``:

- a transfer goes to ``<file>.part``; when that exists, the download resumes with an HTTP
  ``Range`` request (a server that ignores it, answering 200, makes it restart from zero);
- the finished file is checked against the manifest's sha256 (or md5) before it gets its final
  name; a mismatch after a resumed transfer retries once from zero, a mismatch after a full
  transfer deletes the bad file and raises :class:`~repana.errors.ChecksumError` naming the file and
  both checksums;
- the zip is extracted into a temporary folder beside the target and renamed into place, so an
  interrupted extraction never leaves a half-filled ``<stem>/`` folder.

Checksums: the full archives' md5 are those published with torchvision's Omniglot loader; the
small archives' sha256 are those of the copies this project was tested with. Every URL and checksum
can be overridden (``urls=``, ``checksums=``, ``base_url=``, or a JSON manifest
``{"images_background": {"url": ..., "sha256": ...}}``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path

from repana.errors import ChecksumError, DataError, InputError
from repana.progress import progress

OMNIGLOT_BASE_URL = "https://github.com/brendenlake/omniglot/raw/master/python"
OMNIGLOT_MANIFEST: dict[str, dict[str, str]] = {
    "images_background": {"file": "images_background.zip", "md5": "68d2efa1b9178cc56df9314c21c6e718"},
    "images_evaluation": {"file": "images_evaluation.zip", "md5": "6b91aef0f799c5bb55b94e3f2daec811"},
    "images_background_small1": {"file": "images_background_small1.zip",
                                 "sha256": "f38eb80f801274ac2b4dff5b24289016bfaba4a7d5bb50deebf27104ad6cb8a4"},
    "images_background_small2": {"file": "images_background_small2.zip",
                                 "sha256": "3ccaa407515a8778e5d0861875af38b17e418f301ad5bb3b5a6b65d901a41c7f"},
}
DEFAULT_OMNIGLOT_ARCHIVES = ("images_background", "images_evaluation")
CHUNK = 1 << 16


def file_digest(path: str | os.PathLike, algorithm: str) -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def expected_checksum(entry: dict) -> tuple[str, str] | None:
    """``(algorithm, hex)`` of a manifest entry (sha256 preferred), or None when it has none."""
    for algorithm in ("sha256", "md5"):
        if entry.get(algorithm):
            return algorithm, entry[algorithm].lower()
    return None


def verify(path: Path, checksum: tuple[str, str] | None, label: str | None = None) -> None:
    """Raise ChecksumError (naming ``label``, default the file name) when ``path`` does not match
    ``checksum`` (``(algorithm, hex)``)."""
    if checksum is None:
        return
    algorithm, expected = checksum
    actual = file_digest(path, algorithm)
    if actual != expected:
        raise ChecksumError(f"{label or path.name}: {algorithm} mismatch (expected {expected}, got {actual}, "
                            f"{path.stat().st_size} bytes): the download is corrupt or truncated; the bad file "
                            f"was deleted, run the download again")


def _transfer(url: str, part: Path, timeout: float, desc: str) -> bool:
    """Fetch ``url`` into ``part``, resuming from its current size. Returns True when it resumed."""
    start = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={start}-"} if start else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as error:
        if error.code == 416 and start:  # nothing left to fetch: the part file is complete (or longer)
            return True
        raise DataError(f"download of {url} failed: HTTP {error.code} {error.reason}") from error
    except (urllib.error.URLError, OSError) as error:
        raise DataError(f"download of {url} failed: {getattr(error, 'reason', error)}; check the network or "
                        f"the URL (override it with --url / --base-url)") from error
    with response:
        resumed = start > 0 and response.status == 206
        if resumed:
            content_range = response.headers.get("Content-Range", "")
            if not content_range.startswith(f"bytes {start}-"):
                raise DataError(f"download of {url}: the server resumed at the wrong offset ({content_range!r}); "
                                f"delete {part} and retry")
        length = response.headers.get("Content-Length")
        total = (int(length) + (start if resumed else 0)) if length else None
        with open(part, "ab" if resumed else "wb") as handle, \
                progress(desc=desc, total=total, unit="B", unit_scale=True, initial=start if resumed else 0) as bar:
            while block := response.read(CHUNK):
                handle.write(block)
                bar.update(len(block))
            handle.flush()
            os.fsync(handle.fileno())
    return resumed


def download_file(url: str, dest: str | os.PathLike, checksum: tuple[str, str] | None = None,
                  timeout: float = 60.0) -> Path:
    """Download ``url`` to ``dest`` (resuming ``dest.part``), verify ``checksum``, rename into place.

    A ``dest`` that already matches ``checksum`` is kept without any transfer.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists() and checksum is not None:
        try:
            verify(dest, checksum)
            return dest
        except ChecksumError:
            pass  # a stale or damaged copy: fetch it again
    part = dest.with_name(dest.name + ".part")
    resumed = _transfer(url, part, timeout, dest.name)
    try:
        verify(part, checksum, dest.name)
    except ChecksumError:
        part.unlink(missing_ok=True)
        if not resumed:
            raise
        _transfer(url, part, timeout, dest.name)  # the kept partial file was bad: once more from zero
        try:
            verify(part, checksum, dest.name)
        except ChecksumError:
            part.unlink(missing_ok=True)
            raise
    os.replace(part, dest)
    return dest


def extract_zip(archive: str | os.PathLike, dest_dir: str | os.PathLike) -> list[Path]:
    """Extract ``archive`` into ``dest_dir`` atomically per top-level entry (temp folder, then rename).

    Members with absolute paths or ``..`` are refused. Returns the top-level paths created.
    """
    archive, dest_dir = Path(archive), Path(dest_dir)
    try:
        handle = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as error:
        raise DataError(f"{archive} is not a readable zip archive ({error}): delete it and download again") from error
    with handle:
        for name in handle.namelist():
            if name.startswith(("/", "\\")) or ".." in Path(name).parts:
                raise DataError(f"{archive} contains an unsafe path {name!r}; refusing to extract it")
        tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=dest_dir))
        try:
            try:
                handle.extractall(tmp)
            except (zipfile.BadZipFile, OSError, EOFError) as error:
                raise DataError(f"{archive} is corrupt ({error}): delete it and download again") from error
            created = []
            for top in sorted(p for p in tmp.iterdir() if p.name != "__MACOSX"):
                target = dest_dir / top.name
                if target.exists():
                    old = Path(tempfile.mkdtemp(prefix=".old-", dir=dest_dir))
                    os.replace(target, old / top.name)
                    os.replace(top, target)
                    shutil.rmtree(old, ignore_errors=True)
                else:
                    os.replace(top, target)
                created.append(target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return created


def load_manifest(path: str | os.PathLike) -> dict[str, dict[str, str]]:
    """A JSON manifest ``{name: {"url"?, "file"?, "sha256"? | "md5"?}}``."""
    try:
        manifest = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise InputError(f"cannot read the download manifest {path}: {error}") from error
    if not isinstance(manifest, dict) or not all(isinstance(v, dict) for v in manifest.values()):
        raise InputError(f"download manifest {path} must map archive names to objects with url/sha256")
    return manifest


URL_SCHEMES = ("https", "http", "ftp", "file")  # what urllib.request opens


def check_url(url: str, name: str) -> str:
    """``url`` when urllib can open it (scheme in :data:`URL_SCHEMES` and a location), else InputError
    naming the archive ``name``."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme.lower() not in URL_SCHEMES or not (parts.netloc or parts.path.strip("/")):
        raise InputError(f"the URL of archive {name} is {url!r}, not a URL: give https://HOST/PATH "
                         f"(schemes: {', '.join(URL_SCHEMES)})")
    return url


def download_omniglot(root=None, archives=DEFAULT_OMNIGLOT_ARCHIVES, base_url: str | None = None,
                      urls: dict[str, str] | None = None, checksums: dict[str, str] | None = None,
                      manifest: dict[str, dict[str, str]] | None = None, extract: bool = True,
                      timeout: float = 60.0) -> list[Path]:
    """Fetch Omniglot ``archives`` into ``<root>/omniglot`` (root: the data root). Returns the zip paths.

    ``checksums``: ``{name: sha256 hex}`` overriding the manifest; ``urls``: ``{name: url}``;
    ``base_url``: replaces the official location for every archive not in ``urls``.
    """
    from repana.paths import resolve_data_root

    entries = {name: dict(entry) for name, entry in OMNIGLOT_MANIFEST.items()}
    for name, entry in (manifest or {}).items():
        entries.setdefault(name, {"file": f"{name}.zip"}).update(entry)
    for name, digest in (checksums or {}).items():
        entries.setdefault(name, {"file": f"{name}.zip"}).update({"sha256": digest.lower(), "md5": ""})
    unknown = [a for a in archives if a not in entries]
    if unknown:
        raise InputError(f"unknown Omniglot archive(s) {', '.join(unknown)}; known: {', '.join(entries)}")
    sources = {}
    for name in archives:
        file = entries[name].get("file", f"{name}.zip")
        url = (urls or {}).get(name) or (f"{base_url.rstrip('/')}/{file}" if base_url else None) \
            or entries[name].get("url") or f"{OMNIGLOT_BASE_URL}/{file}"
        sources[name] = (file, check_url(url, name))  # every URL before the first download
    folder = resolve_data_root(root) / "omniglot"
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in archives:
        entry = entries[name]
        file, url = sources[name]
        path = download_file(url, folder / file, expected_checksum(entry), timeout=timeout)
        if extract:
            extract_zip(path, folder)
        paths.append(path)
    return paths
