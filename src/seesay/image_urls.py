"""Fetching ``http(s)`` image URLs without letting a client reach what it should not.

Off unless the operator enables it with a host allow-list. Then every hop of a fetch (the
URL and each redirect, checked one by one: the HTTP client never follows redirects itself):

1. must be ``http`` or ``https``, without credentials, to a host on the allow-list
   (``images.example.com`` exactly, or ``*.example.com`` for its subdomains);
2. is resolved, and *every* address the name resolves to must be public: loopback, private,
   link-local (so cloud metadata at 169.254.169.254), shared, reserved, multicast and
   unspecified addresses are refused, also when wrapped in IPv6 (``::ffff:10.0.0.1``,
   6to4, NAT64);
3. is then fetched from the checked address itself (the ``Host`` header and TLS server name
   carry the host name), so a second DNS answer cannot swap in another address.

The whole fetch, redirects included, must finish within ``timeout_s`` and the body must stay
within ``max_bytes`` (checked against Content-Length first, then while reading). httpx (the
``serve`` extra) is needed only when URL images are enabled.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Sequence

import httpx

from seesay.errors import ImageTooLargeError, ImageUrlError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Awaitable[list[IPAddress]]]

_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


async def system_resolver(host: str, port: int) -> list[IPAddress]:
    """Every address ``host`` resolves to, via the operating system's resolver."""
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ImageUrlError(f"cannot resolve the image host '{host}': {exc.strerror}") from exc
    return [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]


def is_public_address(address: IPAddress) -> bool:
    """True only for globally routable unicast addresses (see the module docstring)."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is None and address in _NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None:
            return is_public_address(embedded)
    return address.is_global and not address.is_multicast


def host_allowed(host: str, allowlist: Sequence[str]) -> bool:
    """Whether ``host`` is on the allow-list (exact names and ``*.domain`` wildcards)."""
    host = host.lower().rstrip(".").strip("[]")
    for entry in allowlist:
        entry = entry.lower().rstrip(".").strip("[]")
        if entry.startswith("*.") and host.endswith(entry[1:]) and host != entry[2:]:
            return True
        if host == entry:
            return True
    return False


class UrlImageFetcher:
    """Downloads image bytes from allow-listed public hosts; see the module docstring.

    Args:
        allowlist: Host names (``*.domain`` for subdomains) or IP literals images may come from.
        max_bytes: Largest body accepted.
        timeout_s: Time limit for the whole fetch, redirects included.
        max_redirects: Redirects followed, each checked like the first URL.
        resolver: Host name to addresses (tests pass a stub).
        address_allowed: The address policy (tests may widen it to reach a local server).
    """

    def __init__(
        self,
        allowlist: Sequence[str],
        *,
        max_bytes: int,
        timeout_s: float = 10.0,
        max_redirects: int = 3,
        resolver: Resolver = system_resolver,
        address_allowed: Callable[[IPAddress], bool] = is_public_address,
    ) -> None:
        self.allowlist = tuple(allowlist)
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s
        self.max_redirects = max_redirects
        self._resolve = resolver
        self._address_allowed = address_allowed
        self._client = httpx.AsyncClient(follow_redirects=False, trust_env=False, timeout=timeout_s)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def fetch(self, url: str) -> bytes:
        """The body at ``url``.

        Raises:
            ImageUrlError: The URL or a redirect is refused, or the fetch failed or timed out.
            ImageTooLargeError: The body is over ``max_bytes``.
        """
        try:
            return await asyncio.wait_for(self._follow(url), self.timeout_s)
        except TimeoutError:
            raise ImageUrlError(f"fetching the image URL took longer than {self.timeout_s:g} s") from None
        except httpx.HTTPError as exc:
            raise ImageUrlError(f"fetching the image URL failed: {type(exc).__name__}: {exc}") from None

    async def _follow(self, url: str) -> bytes:
        current = httpx.URL(url)
        for _ in range(self.max_redirects + 1):
            address = await self.check(current)
            request = self._client.build_request(
                "GET",
                current.copy_with(host=str(address)),
                headers={"Host": current.netloc.decode("ascii")},
                extensions={"sni_hostname": current.host} if current.scheme == "https" else {},
            )
            response = await self._client.send(request, stream=True)
            try:
                if response.status_code in _REDIRECTS and "location" in response.headers:
                    current = current.join(response.headers["location"])
                    continue
                if response.status_code != 200:
                    raise ImageUrlError(f"the image URL answered HTTP {response.status_code}; check the URL")
                return await self._read(response)
            finally:
                await response.aclose()
        raise ImageUrlError(f"the image URL redirected more than {self.max_redirects} times")

    async def check(self, url: httpx.URL) -> IPAddress:
        """Check one hop (steps 1 and 2 of the module docstring); return the address to use."""
        if url.scheme not in ("http", "https"):
            raise ImageUrlError(f"image URLs must be http(s) or data: URLs, not '{url.scheme}:'")
        if url.userinfo:
            raise ImageUrlError("image URLs must not contain credentials")
        if not host_allowed(url.host, self.allowlist):
            raise ImageUrlError(
                f"the image host '{url.host}' is not on this server's allow-list; "
                "send the image as a base64 data: URL instead"
            )
        try:
            addresses: list[IPAddress] = [ipaddress.ip_address(url.host)]
        except ValueError:
            addresses = await self._resolve(url.host, url.port or (443 if url.scheme == "https" else 80))
        refused = [a for a in addresses if not self._address_allowed(a)]
        if refused or not addresses:
            raise ImageUrlError(
                f"the image host '{url.host}' resolves to a non-public address "
                f"({refused[0] if refused else 'none'}); images must come from public servers"
            )
        return addresses[0]

    async def _read(self, response: httpx.Response) -> bytes:
        declared = response.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            raise self._too_large(int(declared))
        body = bytearray()
        async for chunk in response.aiter_bytes():
            body.extend(chunk)
            if len(body) > self.max_bytes:
                raise self._too_large(len(body))
        return bytes(body)

    def _too_large(self, size: int) -> ImageTooLargeError:
        return ImageTooLargeError(
            f"the image at the URL is over {size:,} bytes, more than the {self.max_bytes:,}-byte limit; "
            "link a smaller image"
        )
