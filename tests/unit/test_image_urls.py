"""URL images: off by default; with an allow-list, private and metadata addresses are refused,
also after DNS resolution and after redirects. The only network used is a server on 127.0.0.1."""

from __future__ import annotations

import ipaddress
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest

from fakes import FakeEngine, app_client, fake_settings, png_bytes
from seesay.api.app import build_app
from seesay.errors import ImageTooLargeError, ImageUrlError
from seesay.image_urls import IPAddress, UrlImageFetcher, host_allowed, is_public_address

PNG = png_bytes()

# --- the address policy ----------------------------------------------------------------------

REFUSED_ADDRESSES = [
    "127.0.0.1", "127.0.0.2", "10.0.0.1", "10.255.255.254", "172.16.5.4", "192.168.1.1", "169.254.169.254",
    "100.100.100.200", "0.0.0.0", "224.0.0.1", "255.255.255.255", "::1", "::", "fe80::1", "fd00:ec2::254",
    "::ffff:127.0.0.1", "::ffff:169.254.169.254", "64:ff9b::a00:1", "2002:a00:1::1", "ff02::1",
]


@pytest.mark.parametrize("address", REFUSED_ADDRESSES)
def test_non_public_addresses_are_refused(address: str) -> None:
    assert not is_public_address(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111", "::ffff:8.8.8.8"])
def test_public_addresses_are_allowed(address: str) -> None:
    assert is_public_address(ipaddress.ip_address(address))


@pytest.mark.parametrize(
    ("host", "allowed"),
    [("images.example.com", True), ("IMAGES.example.com.", True), ("cdn.shop.test", True), ("a.b.shop.test", True),
     ("shop.test", False), ("evilshop.test", False), ("images.example.com.evil.test", False), ("example.com", False)],
)
def test_the_host_allow_list_matches_exact_names_and_wildcard_subdomains(host: str, allowed: bool) -> None:
    assert host_allowed(host, ["images.example.com", "*.shop.test"]) is allowed


# --- fetching, with a stub resolver and a real server on 127.0.0.1 -------------------------


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        url = urlparse(self.path)
        query = parse_qs(url.query)
        if url.path == "/image.png":
            self._send(200, PNG, {"Content-Type": "image/png"})
        elif url.path == "/redirect":
            self._send(302, b"", {"Location": query["to"][0]})
        elif url.path == "/big":
            self._send(200, b"\0" * 50_000, {"Content-Type": "image/png"})
        elif url.path == "/big-chunked":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for _ in range(10):
                self.wfile.write(b"1388\r\n" + b"\0" * 5000 + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")
        elif url.path == "/slow":
            time.sleep(1.0)
            self._send(200, PNG, {})
        else:
            self._send(404, b"missing", {})

    def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for name, value in {**headers, "Content-Length": str(len(body))}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    """A real HTTP server on 127.0.0.1; yields its base URL."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def only_this_loopback(address: IPAddress) -> bool:
    """The real policy, widened to exactly 127.0.0.1 so the test server is reachable."""
    return str(address) == "127.0.0.1" or is_public_address(address)


async def stub_resolver(host: str, port: int) -> list[IPAddress]:
    table = {"public.shop.test": ["93.184.216.34"], "internal.shop.test": ["10.1.2.3"],
             "mixed.shop.test": ["93.184.216.34", "192.168.0.10"], "meta.shop.test": ["169.254.169.254"],
             "local.shop.test": ["127.0.0.1"]}
    return [ipaddress.ip_address(a) for a in table[host]]


def fetcher(**options: Any) -> UrlImageFetcher:
    defaults: dict[str, Any] = {"max_bytes": 20_000, "timeout_s": 5.0, "resolver": stub_resolver,
                                "address_allowed": only_this_loopback}
    return UrlImageFetcher(options.pop("allowlist", ["127.0.0.1", "*.shop.test"]), **{**defaults, **options})


async def test_an_allowed_url_is_fetched(server: str) -> None:
    assert await fetcher().fetch(f"{server}/image.png") == PNG


async def test_a_redirect_chain_is_followed_hop_by_hop(server: str) -> None:
    hop2 = f"{server}/redirect?to=/image.png"
    assert await fetcher().fetch(f"{server}/redirect?to={hop2}") == PNG


@pytest.mark.parametrize(
    "target",
    ["http://127.0.0.2:{port}/image.png", "http://10.0.0.1/image.png", "http://169.254.169.254/latest/meta-data/",
     "http://[::1]:{port}/image.png", "http://internal.shop.test/image.png", "http://meta.shop.test/x"],
)
async def test_redirects_to_private_or_metadata_addresses_are_refused(server: str, target: str) -> None:
    allowlist = ["127.0.0.1", "127.0.0.2", "10.0.0.1", "169.254.169.254", "::1", "*.shop.test"]
    location = target.format(port=server.rsplit(":", 1)[1])
    with pytest.raises(ImageUrlError, match="non-public address"):
        await fetcher(allowlist=allowlist).fetch(f"{server}/redirect?to={location}")


async def test_a_redirect_off_the_allow_list_is_refused(server: str) -> None:
    with pytest.raises(ImageUrlError, match="not on this server's allow-list"):
        await fetcher().fetch(f"{server}/redirect?to=http://elsewhere.example.org/image.png")


@pytest.mark.parametrize("host", ["internal.shop.test", "mixed.shop.test", "meta.shop.test", "local.shop.test"])
async def test_names_that_resolve_to_any_private_address_are_refused(host: str) -> None:
    with pytest.raises(ImageUrlError, match="non-public address"):
        await fetcher(address_allowed=is_public_address).fetch(f"http://{host}/image.png")


async def test_too_many_redirects_are_refused(server: str) -> None:
    loop = f"{server}/redirect?to={server}/redirect?to=/image.png"
    with pytest.raises(ImageUrlError, match="redirected more than 1 times"):
        await fetcher(max_redirects=1).fetch(loop)


@pytest.mark.parametrize("path", ["/big", "/big-chunked"])
async def test_bodies_over_the_size_limit_are_refused(server: str, path: str) -> None:
    with pytest.raises(ImageTooLargeError):
        await fetcher(max_bytes=20_000).fetch(server + path)


async def test_a_slow_server_hits_the_time_limit(server: str) -> None:
    with pytest.raises(ImageUrlError, match=r"longer than 0\.2 s"):
        await fetcher(timeout_s=0.2).fetch(f"{server}/slow")


@pytest.mark.parametrize(
    ("url", "message"),
    [("file:///etc/passwd", "must be http"), ("http://user:pw@public.shop.test/a.png", "credentials"),
     ("http://127.0.0.1:1/missing", "Connect"), ("{server}/missing", "HTTP 404")],
)
async def test_other_bad_urls_are_refused(server: str, url: str, message: str) -> None:
    with pytest.raises(ImageUrlError, match=message):
        await fetcher().fetch(url.format(server=server))


# --- through the API, with the real policy and the real resolver ---------------------------


def chat_with_image(url: str) -> dict[str, Any]:
    parts = [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": "what is it?"}]
    return {"model": "fake-vl", "messages": [{"role": "user", "content": parts}]}


async def test_url_images_are_refused_by_default(server: str) -> None:
    async with app_client(build_app(fake_settings(), FakeEngine())) as client:
        response = await client.post("/v1/chat/completions", json=chat_with_image(f"{server}/image.png"))
    assert response.status_code == 400
    assert "does not fetch http(s) image URLs" in response.json()["error"]["message"]


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:{port}/image.png", "http://10.0.0.1/a.png", "http://169.254.169.254/latest/meta-data/",
     "http://[::1]:{port}/image.png", "http://localhost:{port}/image.png", "http://[::ffff:127.0.0.1]/a.png"],
)
async def test_with_an_allow_list_private_addresses_are_still_refused(server: str, url: str) -> None:
    port = server.rsplit(":", 1)[1]
    allowlist = "127.0.0.1,10.0.0.1,169.254.169.254,::1,localhost,::ffff:127.0.0.1"
    engine = FakeEngine()
    settings = fake_settings(allow_url_images=True, url_allowlist=allowlist)
    async with app_client(build_app(settings, engine)) as client:
        response = await client.post("/v1/chat/completions", json=chat_with_image(url.format(port=port)))
        assert response.status_code == 400
        error = response.json()["error"]
        assert error["code"] == "invalid_image_url" and "non-public address" in error["message"]
        assert error["param"] == "messages[0].content[0].image_url"
        assert (await client.get("/health")).status_code == 200
    assert engine.requests == []


async def test_the_fetcher_reaches_a_server_through_the_api_when_policy_allows(
    server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import seesay.image_urls

    def permissive(allowlist: Any, **options: Any) -> UrlImageFetcher:
        return fetcher(allowlist=allowlist)

    monkeypatch.setattr(seesay.image_urls, "UrlImageFetcher", permissive)
    engine = FakeEngine()
    settings = fake_settings(allow_url_images=True, url_allowlist="127.0.0.1")
    async with app_client(build_app(settings, engine)) as client:
        response = await client.post("/v1/chat/completions", json=chat_with_image(f"{server}/image.png"))
    assert response.status_code == 200 and response.json()["choices"][0]["message"]["content"] == (
        "1 image(s): what is it?")
    assert engine.requests[0].images[0].source_size == (64, 48)


def test_allow_url_images_without_an_allow_list_is_a_settings_error() -> None:
    with pytest.raises(ValueError, match="url_allowlist is empty"):
        fake_settings(allow_url_images=True)

