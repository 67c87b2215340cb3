"""Free TCP port lookup for the local Kafka and PostgreSQL stack."""

import socket


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port on ``host`` that the kernel reports as free.

    The port is found by binding port 0 and closing the socket again, so another
    process can take it before the caller binds it. Callers that start a server on
    the port must handle a failed bind.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]

    return port
