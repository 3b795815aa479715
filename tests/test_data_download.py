"""`repana data download omniglot` end to end against a local HTTP server on 127.0.0.1.

The server serves copies of the shared small archives made in tmp_path; it honours Range requests
(unless told not to) and can corrupt a file on the fly, so resume, restart and checksum failure are
all exercised over a real socket.
"""

from __future__ import annotations

import hashlib
import http.server
import shutil
import threading
from pathlib import Path

import pytest

from repana.cli import main
from repana.data.download import download_file, download_omniglot
from repana.errors import ChecksumError

SMALL = ("images_background_small1", "images_background_small2")


class Server:
    """A threaded HTTP server on an ephemeral loopback port, serving ``folder``."""

    def __init__(self, folder: Path):
        self.folder, self.requests = folder, []
        self.honour_range, self.corrupt = True, set()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                name = self.path.lstrip("/")
                path = server.folder / name
                server.requests.append((name, self.headers.get("Range")))
                if not path.is_file():
                    self.send_error(404)
                    return
                data = path.read_bytes()
                if name in server.corrupt:
                    data = data[:1000] + bytes(b ^ 0xFF for b in data[1000:1010]) + data[1010:]
                start = 0
                requested = self.headers.get("Range")
                if requested and server.honour_range:
                    start = int(requested.split("=")[1].split("-")[0])
                    if start >= len(data):
                        self.send_error(416)
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                self.wfile.write(data[start:])

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(tmp_path, omniglot_root):
    served = tmp_path / "served"
    served.mkdir()
    for stem in SMALL:
        shutil.copy(omniglot_root / f"{stem}.zip", served / f"{stem}.zip")
    instance = Server(served)
    yield instance
    instance.close()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.data
def test_download_verify_and_extract(tmp_path, server):
    root = tmp_path / "data"
    paths = download_omniglot(root, archives=SMALL, base_url=server.url)
    folder = root / "omniglot"
    for stem, path in zip(SMALL, paths):
        assert path == folder / f"{stem}.zip" and sha256(path) == sha256(server.folder / path.name)
        assert (folder / stem / "Greek" / "character01").is_dir()  # extracted in the official layout
    assert len(list((folder / "images_background_small1").rglob("*.png"))) == 2720
    assert not list(folder.glob("*.part")) and not list(folder.glob(".extract-*"))
    assert all(r is None for _, r in server.requests)
    server.requests.clear()
    download_omniglot(root, archives=SMALL, base_url=server.url, extract=False)  # verified copies: no transfer
    assert server.requests == []


@pytest.mark.data
def test_corrupted_transfer_is_reported_and_not_kept(tmp_path, server):
    server.corrupt.add("images_background_small2.zip")
    root = tmp_path / "data"
    with pytest.raises(ChecksumError, match=r"images_background_small2.zip: sha256 mismatch \(expected "
                                            r"3ccaa407515a8778e5d0861875af38b17e418f301ad5bb3b5a6b65d901a41c7f"):
        download_omniglot(root, archives=SMALL, base_url=server.url)
    folder = root / "omniglot"
    assert (folder / "images_background_small1.zip").is_file()  # the good one is kept
    assert not (folder / "images_background_small2.zip").exists()
    assert not (folder / "images_background_small2.zip.part").exists()
    assert not (folder / "images_background_small2").exists()


@pytest.mark.data
def test_partial_file_is_resumed_with_a_range_request(tmp_path, server):
    dest = tmp_path / "out" / "images_background_small1.zip"
    dest.parent.mkdir()
    full = (server.folder / dest.name).read_bytes()
    dest.with_name(dest.name + ".part").write_bytes(full[:500_000])
    download_file(f"{server.url}/{dest.name}", dest, ("sha256", sha256(server.folder / dest.name)))
    assert dest.read_bytes() == full
    assert server.requests == [(dest.name, "bytes=500000-")]


@pytest.mark.data
def test_server_without_range_support_restarts(tmp_path, server):
    server.honour_range = False
    dest = tmp_path / "images_background_small1.zip"
    full = (server.folder / dest.name).read_bytes()
    dest.with_name(dest.name + ".part").write_bytes(full[:300_000])
    download_file(f"{server.url}/{dest.name}", dest, ("sha256", sha256(server.folder / dest.name)))
    assert dest.read_bytes() == full


@pytest.mark.data
def test_bad_partial_file_is_fetched_again_from_zero(tmp_path, server):
    dest = tmp_path / "images_background_small1.zip"
    full = (server.folder / dest.name).read_bytes()
    dest.with_name(dest.name + ".part").write_bytes(b"\0" * 400_000)  # garbage left by an earlier attempt
    download_file(f"{server.url}/{dest.name}", dest, ("sha256", sha256(server.folder / dest.name)))
    assert dest.read_bytes() == full
    assert server.requests == [(dest.name, "bytes=400000-"), (dest.name, None)]


@pytest.mark.data
def test_cli_download_with_overridden_checksum(tmp_path, server, capsys):
    root = tmp_path / "data"
    wrong = "0" * 64
    assert main(["data", "download", "omniglot", "--root", str(root), "--base-url", server.url,
                 "--archives", "images_background_small1", "--sha256", f"images_background_small1={wrong}",
                 "--no-extract"]) == 1
    assert "sha256 mismatch" in capsys.readouterr().err
    assert main(["data", "download", "omniglot", "--root", str(root), "--base-url", server.url,
                 "--archives", "images_background_small1", "--no-extract"]) == 0
    assert "checksum verified" in capsys.readouterr().out
    assert (root / "omniglot" / "images_background_small1.zip").is_file()
    assert not (root / "omniglot" / "images_background_small1").exists()
