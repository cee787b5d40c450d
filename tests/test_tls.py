"""wss://: the same endpoint behind TLS, with a throwaway self-signed certificate."""

import shutil
import ssl
import subprocess

import gevent
import pytest
import websocket

import geventws


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return str(cert), str(key)


def test_echo_and_broadcast_over_tls(certificate):
    cert, key = certificate
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    gateway = geventws.WebsocketClientGateway()
    seen = []

    def handler(client, request, response):
        seen.append(client)
        gateway.add_client(client)
        for message in client:
            data = message.buffer()
            client.send_binary(data)
            gateway.broadcast_text("broadcast after echo").wait(5)

    server = geventws.Server()
    server.expose(("127.0.0.1", 0), ssl_context=context)
    factory = geventws.Rfc6455ClientFactory(rate_limit=None)
    server.start(geventws.Websocket(server, None, None, handler, client_factory=factory))
    try:
        port = server.addresses[0][1]
        client = websocket.create_connection(
            f"wss://127.0.0.1:{port}/", sslopt={"cert_reqs": ssl.CERT_NONE}, timeout=10
        )
        payload = bytes(range(256)) * 1024  # several frames and TLS records
        client.send_binary(payload)
        assert client.recv() == payload
        assert client.recv() == "broadcast after echo"
        assert seen[0].tls_info is not None and seen[0].tls_info.version.startswith("TLS")
        client.close()
        gevent.sleep(0.1)
    finally:
        server.stop()
