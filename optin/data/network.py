"""The network guard of jobs that must not reach the network (compute nodes without internet): what
the data and model readers check before a download, and what every job sets up
(optin.workflow.runtime.start_job)."""

from __future__ import annotations

import os

# Set on compute nodes without internet (docs/cluster-gpu.md, "Cluster"): every job then fails at its first
# outbound connection with a message naming the prefetch, instead of waiting for a network timeout.
NO_NETWORK_ENV = "OPTIN_OFFLINE"
LOOPBACK = ("localhost", "127.0.0.1", "::1")


class NetworkForbidden(ConnectionRefusedError):
    pass


def network_forbidden() -> bool:
    return os.environ.get(NO_NETWORK_ENV, "0") not in ("0", "")


def forbid_network() -> None:
    """Make every outbound (non-loopback) connection and name lookup of this process raise at once."""
    import socket

    if getattr(socket.socket.connect, "optin_guard", False):
        return

    def refuse(host) -> None:
        raise NetworkForbidden(f"outbound connection to {host} refused: {NO_NETWORK_ENV}=1 (a job that must not use the "
                               "network); fetch models, datasets and weights first with the prefetch "
                               "(make prefetch CONFIG=<your config>) on a machine that reaches them")

    def is_loopback(host) -> bool:
        return isinstance(host, str) and (host in LOOPBACK or host.startswith("127."))

    def guard(method):
        def guarded(self, address, *args):
            if self.family in (socket.AF_INET, socket.AF_INET6) and not is_loopback(address[0]):
                refuse(f"{address[0]}:{address[1]}")
            return method(self, address, *args)

        guarded.optin_guard = True
        return guarded

    lookup = socket.getaddrinfo

    def guarded_lookup(host, *args, **kwargs):
        if host is not None and not is_loopback(host.decode() if isinstance(host, bytes) else host):
            refuse(host)
        return lookup(host, *args, **kwargs)

    socket.socket.connect = guard(socket.socket.connect)
    socket.socket.connect_ex = guard(socket.socket.connect_ex)
    socket.getaddrinfo = guarded_lookup
