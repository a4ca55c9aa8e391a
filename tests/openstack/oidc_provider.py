"""A small OpenID Connect provider for tests, on 127.0.0.1 only.

Serves the discovery document, the JWKS (one RSA key, RS256), and a token
endpoint for the resource-owner password grant (what keystoneauth's
v3oidcpassword uses) that issues JWT access and ID tokens. `/mint` makes
tokens for the refusal tests: ?kind=good|bad-signature|wrong-issuer|
wrong-audience|expired&user=NAME. Only the venv's `cryptography` is used.

    python oidc_provider.py --port-file FILE --client-id yunhe \
        --client-secret S --user alice:secret:dev,ops

Writes the port to FILE once listening; runs until killed.
"""

import argparse
import base64
import json
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def int_b64(n):
    return b64(n.to_bytes((n.bit_length() + 7) // 8, "big"))


class Provider:
    def __init__(self, client_id, client_secret, users):
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.client_id = client_id
        self.client_secret = client_secret
        self.users = users  # name -> (password, [groups])
        self.issuer = None

    def jwks(self):
        numbers = self.key.public_key().public_numbers()
        return {"keys": [{"kty": "RSA", "use": "sig", "alg": "RS256", "kid": "test-key",
                          "n": int_b64(numbers.n), "e": int_b64(numbers.e)}]}

    def sign(self, claims, key=None):
        header = b64(json.dumps({"alg": "RS256", "typ": "JWT", "kid": "test-key"}).encode())
        payload = b64(json.dumps(claims).encode())
        signed = f"{header}.{payload}".encode()
        signature = (key or self.key).sign(signed, padding.PKCS1v15(), hashes.SHA256())
        return f"{header}.{payload}.{b64(signature)}"

    def claims(self, user):
        now = int(time.time())
        _, groups = self.users.get(user, ("", []))
        return {"iss": self.issuer, "sub": f"sub-{user}", "aud": self.client_id,
                "azp": self.client_id, "preferred_username": user,
                "email": f"{user}@example.org", "groups": groups,
                "iat": now, "nbf": now, "exp": now + 300}

    def mint(self, kind, user):
        claims = self.claims(user)
        if kind == "bad-signature":
            return self.sign(claims, self.other_key)
        if kind == "wrong-issuer":
            claims["iss"] = "http://127.0.0.1:1/not-the-issuer"
        elif kind == "wrong-audience":
            claims["aud"] = "someone-else"
        elif kind == "expired":
            claims["iat"] = claims["nbf"] = int(time.time()) - 7200
            claims["exp"] = int(time.time()) - 3600
        return self.sign(claims)


def handler_for(provider):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def reply(self, status, body):
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            url = urllib.parse.urlparse(self.path)
            if url.path == "/.well-known/openid-configuration":
                self.reply(200, {
                    "issuer": provider.issuer,
                    "jwks_uri": provider.issuer + "/jwks",
                    "token_endpoint": provider.issuer + "/token",
                    "grant_types_supported": ["password", "client_credentials"],
                    "id_token_signing_alg_values_supported": ["RS256"],
                })
            elif url.path == "/jwks":
                self.reply(200, provider.jwks())
            elif url.path == "/mint":
                query = urllib.parse.parse_qs(url.query)
                kind = query.get("kind", ["good"])[0]
                user = query.get("user", ["alice"])[0]
                self.reply(200, {"access_token": provider.mint(kind, user)})
            else:
                self.reply(404, {"error": "not_found"})

        def do_POST(self):
            length = int(self.headers.get("Content-Length") or 0)
            form = urllib.parse.parse_qs(self.rfile.read(length).decode())
            field = lambda k: form.get(k, [None])[0]  # noqa: E731
            client_id, secret = field("client_id"), field("client_secret")
            auth = self.headers.get("Authorization", "")
            if auth.startswith("Basic "):
                client_id, _, secret = base64.b64decode(auth[6:]).decode().partition(":")
            if urllib.parse.urlparse(self.path).path != "/token":
                return self.reply(404, {"error": "not_found"})
            if client_id != provider.client_id or secret != provider.client_secret:
                return self.reply(401, {"error": "invalid_client"})
            if field("grant_type") != "password":
                return self.reply(400, {"error": "unsupported_grant_type"})
            user = field("username")
            if user not in provider.users or provider.users[user][0] != field("password"):
                return self.reply(400, {"error": "invalid_grant"})
            token = provider.sign(provider.claims(user))
            self.reply(200, {"access_token": token, "id_token": token,
                             "token_type": "Bearer", "expires_in": 300})

    return Handler


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port-file", required=True)
    parser.add_argument("--client-id", default="yunhe")
    parser.add_argument("--client-secret", default="secret")
    parser.add_argument("--user", action="append", default=[],
                        help="name:password:group1,group2")
    args = parser.parse_args()
    users = {}
    for spec in args.user:
        name, password, groups = (spec.split(":", 2) + [""])[:3]
        users[name] = (password, [g for g in groups.split(",") if g])
    provider = Provider(args.client_id, args.client_secret, users)
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler_for(provider))
    provider.issuer = f"http://127.0.0.1:{server.server_address[1]}"
    with open(args.port_file + ".tmp", "w") as f:
        f.write(str(server.server_address[1]))
    import os
    os.rename(args.port_file + ".tmp", args.port_file)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
