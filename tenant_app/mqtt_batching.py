"""paho-mqtt for one high-rate QoS 1 subscriber: buffered reads, and a batch's PUBACKs in one write.

paho reads every packet with a select() and three recv() calls and writes every packet with its
own send(), waking its network thread through a socket pair each time. For the ingestion consumer
(thousands of ~150-byte PUBLISHes a second, acknowledged in batches) that was most of its CPU.
This module keeps paho for the protocol (CONNECT and its properties, SUBSCRIBE, packet decoding,
keepalive, callbacks) and changes only the I/O underneath it:

- `BufferedSocket` wraps the TCP socket paho reads and writes. One recv() fills a 256 KiB buffer
  that paho's small reads are served from; paho's writes are collected and sent by `flush()`.
- `BatchingClient` is a paho `Client` that creates that socket (overriding `_create_socket`, the
  method paho itself uses to put its websockets wrapper in place) and adds `ack_many()`: the
  PUBACKs of a committed batch, written as one send() by the I/O loop.
- With a `sink`, an incoming QoS 0/1 PUBLISH is decoded in a few slices (`_handle_publish`) and
  handed over as (packet id, QoS, topic, payload): no Properties object, MQTTMessage or
  topic-filter matching per message. Anything else (QoS 2, a topic alias) goes to paho's own
  handler.
- `BatchingClient.run_io()` is the network loop, built on paho's external-loop API (`reconnect`,
  `loop_read`, `loop_write`, `loop_misc`) instead of `loop_start()`: it reads every packet already
  buffered before it selects again.

The paho internals relied on (`_create_socket` returning the socket paho then uses,
`_handle_publish` being called with the packet in `_in_packet`, the PUBACK bytes paho would send)
are pinned by tests/tenant_app/test_mqtt_batching.py against the pinned paho version.
"""

from __future__ import annotations

import contextlib
import select
import socket
import ssl
import threading
from collections import deque
from collections.abc import Callable, Sequence

import paho.mqtt.client as mqtt

READ_SIZE = 256 * 1024
PUBACK = 0x40  # MQTT control packet type 4, flags 0

# (packet id, QoS, topic, payload, connection number), called in the I/O thread for each PUBLISH.
Sink = Callable[[int, int, str, bytes, int], None]


def puback_packets(mids: Sequence[int]) -> bytes:
    """The PUBACKs (success, no properties: remaining length 2, valid in MQTT 3.1.1 and 5) of `mids`."""
    out = bytearray(4 * len(mids))
    pos = 0
    for mid in mids:
        out[pos] = PUBACK
        out[pos + 1] = 2
        out[pos + 2] = mid >> 8
        out[pos + 3] = mid & 0xFF
        pos += 4
    return bytes(out)


def read_varint(data: bytes | bytearray, pos: int, end: int) -> tuple[int, int] | None:
    """The MQTT variable byte integer at `pos` (at most 4 bytes) and the position after it; None
    when it runs past `end` or is longer than MQTT allows."""
    value, shift = 0, 0
    while pos < end and shift <= 21:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos
    return None


def decode_publish(
    packet: bytes | bytearray, pos: int, end: int, qos: int, v5: bool
) -> tuple[int, str, bytes] | None:
    """(packet id, topic, payload) of the QoS 0/1 PUBLISH whose variable header starts at `pos` and
    which ends at `end`; None for a topic alias (never enabled by us) or anything malformed (left to
    paho, which reports it). MQTT 5 properties are skipped: a varint length, then that many bytes."""
    if end - pos < 2:
        return None
    start = pos + 2
    pos = start + (packet[pos] << 8 | packet[pos + 1])
    if pos == start or pos > end:
        return None
    # The broker only forwards UTF-8 topics; anything else is kept readable and dead-lettered.
    topic = packet[start:pos].decode("utf-8", "replace")
    mid = 0
    if qos:
        if pos + 2 > end:
            return None
        mid = packet[pos] << 8 | packet[pos + 1]
        pos += 2
    if v5:
        properties = read_varint(packet, pos, end)
        if properties is None:
            return None
        pos = properties[1] + properties[0]
        if pos > end:
            return None
    return mid, topic, bytes(packet[pos:end])


class BufferedSocket:
    """A non-blocking TCP socket with a read buffer and a write buffer, shaped like the socket paho uses.

    `recv(n)` serves from the buffer and refills it with one large recv() when it is empty; it
    raises BlockingIOError like the socket when nothing is there. `send()` only buffers: `flush()`
    writes. A failed write is remembered and raised by the next `recv()`, so paho sees the broken
    connection the way it would have seen it itself.
    """

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._rbuf = b""
        self._rpos = 0
        self._wbuf = bytearray()
        self._error: OSError | None = None

    # --- what paho calls -----------------------------------------------------------------------
    def recv(self, n: int) -> bytes:
        if self._rpos >= len(self._rbuf):
            if self._error is not None:
                raise self._error
            data = self._sock.recv(READ_SIZE)  # BlockingIOError when empty; b"" when closed
            if not data:
                return data
            self._rbuf, self._rpos = data, 0
        start = self._rpos
        self._rpos = min(start + n, len(self._rbuf))
        return self._rbuf[start : self._rpos]

    def send(self, data: bytes | bytearray) -> int:
        self._wbuf += data
        return len(data)

    def pending(self) -> int:
        """Bytes already read from the network and not yet handed to paho."""
        return len(self._rbuf) - self._rpos

    def buffered(self) -> tuple[bytes, int]:
        """The read buffer and the position of its first byte not handed out yet."""
        return self._rbuf, self._rpos

    def consumed(self, pos: int) -> None:
        """Bytes up to `pos` of the read buffer were decoded by the caller."""
        self._rpos = pos

    def setblocking(self, flag: bool) -> None:
        self._sock.setblocking(flag)

    def settimeout(self, value: float | None) -> None:
        self._sock.settimeout(value)

    def fileno(self) -> int:
        return self._sock.fileno()

    def close(self) -> None:
        """Send what is buffered (a DISCONNECT, the last PUBACKs) if the peer takes it, then close."""
        if self._wbuf and self._error is None:
            try:
                self._sock.settimeout(2.0)
                self._sock.sendall(self._wbuf)
            except OSError:
                pass
        self._wbuf.clear()
        self._sock.close()

    # --- what the I/O loop calls -------------------------------------------------------------------
    @property
    def unsent(self) -> int:
        """Bytes waiting to be written (0 once a write failed: the next recv() reports the error)."""
        return 0 if self._error is not None else len(self._wbuf)

    def flush(self) -> None:
        """Write as much of the buffer as the socket takes now (the rest when select says writable)."""
        if not self._wbuf or self._error is not None:
            return
        try:
            sent = self._sock.send(self._wbuf)
        except BlockingIOError:
            return
        except OSError as e:
            self._error = e
            return
        del self._wbuf[:sent]

    def write_now(self, data: bytes) -> None:
        self._wbuf += data


class BatchingClient(mqtt.Client):
    """A paho MQTT client whose socket is a BufferedSocket, for `run_io()` and `ack_many()`.

    Plain TCP only (the consumer talks to its instance's broker inside the cluster).
    `connection_number` counts connections: packet ids are only meaningful on the connection that
    delivered them, so acknowledgements name theirs and stale ones are dropped.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if self._transport != "tcp":
            raise ValueError("BatchingClient supports plain TCP connections only")
        self.connection_number = 0
        self.sink: Sink | None = None
        self._buffered: BufferedSocket | None = None
        self._acks: deque[tuple[int, Sequence[int]]] = deque()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)

    def _create_socket(self) -> BufferedSocket:  # paho calls it from reconnect()
        sock = super()._create_socket()
        if not isinstance(sock, socket.socket) or isinstance(sock, ssl.SSLSocket):
            sock.close()
            raise ValueError("BatchingClient supports plain TCP connections only")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.connection_number += 1
        self._buffered = BufferedSocket(sock)
        return self._buffered

    def _handle_publish(self) -> mqtt.MQTTErrorCode:  # paho calls it for every PUBLISH it reads
        sink = self.sink
        header = self._in_packet["command"]
        qos = (header & 0x06) >> 1
        packet = self._in_packet["packet"]
        fields = None if sink is None or qos == 2 else decode_publish(packet, 0, len(packet), qos, self._v5)
        if fields is None:
            return super()._handle_publish()
        sink(fields[0], qos, fields[1], fields[2], self.connection_number)
        return mqtt.MQTT_ERR_SUCCESS

    @property
    def _v5(self) -> bool:
        return self._protocol == mqtt.MQTTv5

    def _take_publishes(self, sock: BufferedSocket) -> int:
        """Decode the complete QoS 0/1 PUBLISH packets at the front of the read buffer in one loop,
        handing each to the sink; stop at the first packet that is anything else or not complete
        yet, which paho then reads (from the same place: nothing of it was consumed here).

        paho reads a packet with three recv() calls, a dict of state and a handler lookup; for a
        stream of ~150-byte PUBLISHes that framing was the largest part of the consumer's CPU.
        Only called between packets (paho holds no partial packet).
        """
        sink = self.sink
        if sink is None or self._in_packet["command"] != 0:
            return 0
        buf, pos = sock.buffered()
        end, v5, connection, taken = len(buf), self._v5, self.connection_number, 0
        while pos + 2 <= end:
            header = buf[pos]
            qos = (header >> 1) & 3
            if header & 0xF0 != 0x30 or qos > 1:
                break
            remaining = read_varint(buf, pos + 1, end)
            if remaining is None:
                break  # incomplete or over-long: paho reads it (and refuses what is over-long)
            length, start = remaining
            stop = start + length
            if stop > end:
                break
            fields = decode_publish(buf, start, stop, qos, v5)
            if fields is None:
                break
            sink(fields[0], qos, fields[1], fields[2], connection)
            pos = stop
            taken += 1
        if taken:
            sock.consumed(pos)
            with self._msgtime_mutex:  # what paho's own read does: the keepalive counts from here
                self._last_bytes_received = mqtt.time_func()
        return taken

    # --- acknowledgements (any thread) ---------------------------------------------------------------
    def ack_many(self, connection: int, mids: Sequence[int]) -> None:
        """PUBACK `mids` (received on `connection`) in one write; dropped if that connection is gone."""
        if not mids:
            return
        self._acks.append((connection, mids))
        self.wake()

    def wake(self) -> None:
        """Make `run_io()` look at its acknowledgements (and its stop flag) now."""
        with contextlib.suppress(OSError):  # BlockingIOError: already awake; OSError: closing
            self._wake_w.send(b"\0")

    def _write_acks(self, sock: BufferedSocket) -> None:
        while self._acks:
            connection, mids = self._acks.popleft()
            if connection == self.connection_number:
                sock.write_now(puback_packets(mids))
            # Otherwise the broker resends those messages on the new connection (under new packet
            # ids): they are stored as duplicates (skipped) and acknowledged then.

    # --- the network loop (one thread) ---------------------------------------------------------------
    def run_io(
        self,
        stop: threading.Event,
        *,
        on_connect_fail: Callable[[Exception], None] | None = None,
        min_delay: float = 1.0,
        max_delay: float = 30.0,
    ) -> None:
        """Connect, read, acknowledge and keep alive until `stop` is set; reconnect with back-off.

        Call `connect_async()` first. The first attempt is immediate; after a failed attempt or a
        lost connection the wait starts at `min_delay` and doubles up to `max_delay` until a
        connection is accepted (CONNACK success). Returns after writing the acknowledgements
        queued before `stop` and disconnecting.
        """
        delay, first = min_delay, True
        try:
            while not stop.is_set():
                if not first and stop.wait(delay):
                    break
                first = False
                try:
                    self.reconnect()
                except (OSError, ValueError) as e:
                    if on_connect_fail is not None:
                        on_connect_fail(e)
                    delay = min(max_delay, delay * 2)
                    continue
                accepted = self._serve(stop)
                delay = min_delay if accepted else min(max_delay, delay * 2)
        finally:
            sock = self._buffered
            if sock is not None and self.socket() is sock:
                self._write_acks(sock)
                self.disconnect()  # queues DISCONNECT; paho then closes the socket, which flushes it
            self._wake_r.close()
            self._wake_w.close()

    def _serve(self, stop: threading.Event) -> bool:
        """One connection's life, until it is lost or `stop` is set; True if the broker accepted it."""
        sock = self._buffered
        assert sock is not None
        accepted = False
        while not stop.is_set() and self.socket() is sock:
            accepted = accepted or self.is_connected()
            if not sock.pending():
                wlist = [sock] if sock.unsent else []
                try:
                    readable, _, _ = select.select([sock, self._wake_r], wlist, [], 1.0)
                except (OSError, ValueError):
                    readable = [sock]  # let the read report the error
                if self._wake_r in readable:
                    with contextlib.suppress(BlockingIOError):
                        while self._wake_r.recv(4096):
                            pass
                if sock not in readable:
                    self._after_reads(sock)
                    continue
            self._read_available(sock)
            if self.socket() is not sock:
                break
            self._after_reads(sock)
        return accepted or self.is_connected()

    def _read_available(self, sock: BufferedSocket) -> None:
        """Read every packet already received before looking at the network again: runs of
        PUBLISHes decoded by `_take_publishes`, anything else (and each refill of the buffer) by
        paho, which reports a lost or broken connection its own way."""
        rc = self.loop_read()
        while rc == mqtt.MQTT_ERR_SUCCESS and sock.pending() and self.socket() is sock:
            if not self._take_publishes(sock) or sock.pending():
                rc = self.loop_read()

    def _after_reads(self, sock: BufferedSocket) -> None:
        self._write_acks(sock)
        if self.want_write():  # packets queued from inside a callback (SUBSCRIBE from on_connect)
            self.loop_write()
        self.loop_misc()  # keepalive: PINGREQ when due, drop a connection whose PINGRESP is late
        if self.socket() is sock:
            sock.flush()
