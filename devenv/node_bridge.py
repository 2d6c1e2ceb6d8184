"""The two paths between the host and the real node's network namespace, both made of files.

- **node -> API server**: a TCP listener inside the namespace (the node's address, port 6443); each
  connection is relayed to the API server on the host's loopback. kubelet, kube-proxy,
  kube-router, local-path-provisioner and pods (through the `kubernetes` Service) use it. TLS
  passes through untouched: the API server still authenticates every client by its certificate.
- **API server -> node** (kubectl logs/exec/port-forward, the API server's proxy): an HTTP CONNECT
  proxy on a unix socket, which the API server's egress selector uses for all its cluster
  traffic; each tunnel is opened from inside the namespace.

So the host gets no interface, route or firewall rule, and nothing addressed to the node's or the
pods' private addresses ever leaves the namespace.

    python -m devenv.node_bridge --netns /run/netns/iotistic-node --listen 10.240.1.2:6443 \\
        --apiserver 127.0.0.1:56443 --egress-socket .data/cluster/run/egress.sock
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import sys

from devenv.netns import socket_in

CONNECT_TIMEOUT = 10.0


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            if writer.can_write_eof():
                writer.write_eof()


async def relay(
    a: tuple[asyncio.StreamReader, asyncio.StreamWriter], b: tuple[asyncio.StreamReader, asyncio.StreamWriter]
) -> None:
    """Copy both ways until both sides are done, then close both."""
    try:
        await asyncio.gather(pipe(a[0], b[1]), pipe(b[0], a[1]))
    finally:
        for _, w in (a, b):
            w.close()
            with contextlib.suppress(Exception):
                await w.wait_closed()


async def open_in_netns(netns: str, host: str, port: int):
    """A TCP connection opened from inside the namespace."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    family, _, _, _, address = infos[0]
    sock = socket_in(netns, family)
    sock.setblocking(False)
    try:
        await asyncio.wait_for(loop.sock_connect(sock, address), CONNECT_TIMEOUT)
    except BaseException:
        sock.close()
        raise
    return await asyncio.open_connection(sock=sock)


class Bridge:
    def __init__(self, netns: str, listen: tuple[str, int], apiserver: tuple[str, int], egress: str) -> None:
        self.netns, self.listen, self.apiserver, self.egress = netns, listen, apiserver, egress

    async def to_apiserver(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream = await asyncio.wait_for(asyncio.open_connection(*self.apiserver), CONNECT_TIMEOUT)
        except (TimeoutError, OSError) as e:
            log(f"node -> API server: cannot reach {self.apiserver[0]}:{self.apiserver[1]}: {e}")
            writer.close()
            return
        await relay((reader, writer), upstream)

    async def from_apiserver(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One HTTP CONNECT tunnel from the API server's egress selector into the namespace."""
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), CONNECT_TIMEOUT)
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            writer.close()
            return
        request = head.decode(errors="replace").split("\r\n", 1)[0].split()
        if len(request) < 2 or request[0] != "CONNECT":
            writer.write(b"HTTP/1.1 405 Method Not Allowed\r\n\r\n")
            writer.close()
            return
        host, _, port = request[1].rpartition(":")
        try:
            upstream = await open_in_netns(self.netns, host.strip("[]"), int(port))
        except (TimeoutError, OSError, ValueError) as e:
            log(f"API server -> node: cannot reach {request[1]}: {e}")
            writer.write(b"HTTP/1.1 502 Bad Gateway\r\n\r\n")
            writer.close()
            return
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await writer.drain()
        await relay((reader, writer), upstream)

    async def serve(self) -> None:
        listener = socket_in(self.netns)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(self.listen)
        listener.listen(128)
        listener.setblocking(False)
        inbound = await asyncio.start_server(self.to_apiserver, sock=listener)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.egress)
        old_mask = os.umask(0o177)  # only root may open tunnels into the node
        try:
            outbound = await asyncio.start_unix_server(self.from_apiserver, path=self.egress)
        finally:
            os.umask(old_mask)
        host, port = self.apiserver
        log(f"bridge: {self.listen[0]}:{self.listen[1]} (in {self.netns}) -> {host}:{port}")
        log(f"bridge: CONNECT tunnels from {self.egress} into {self.netns}")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        async with inbound, outbound:
            await stop.wait()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.egress)


def address(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    return host, int(port)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devenv.node_bridge", description=__doc__)
    parser.add_argument("--netns", required=True, help="the node's namespace, e.g. /run/netns/iotistic-node")
    parser.add_argument("--listen", required=True, type=address, help="address:port inside the namespace")
    parser.add_argument("--apiserver", required=True, type=address, help="the API server on the host")
    parser.add_argument("--egress-socket", required=True, help="unix socket for the API server's tunnels")
    args = parser.parse_args(argv)
    asyncio.run(Bridge(args.netns, args.listen, args.apiserver, args.egress_socket).serve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
