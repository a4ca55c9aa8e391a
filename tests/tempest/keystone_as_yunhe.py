"""Real Keystone behind yunhe's command line, to check the test harness and to see what
Keystone itself answers. Not used by CI.

    keystone_as_yunhe.py serve --state-dir D --listen 127.0.0.1:P

Like `yunhe serve`: bootstraps (RegionOne, Default domain, admin project and user with the
password from $YUNHE_ADMIN_PASSWORD), writes D/clouds.yaml and D/admin-openrc.sh, serves Keystone
under /identity and 200 on /healthz. State is SQLite in D. Serve one request at a time
(SQLite and Keystone's threads do not mix well): run tempest with concurrency 1.
"""
import os
import socketserver
import subprocess
import sys
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server


def arg(name):
    return sys.argv[sys.argv.index(name) + 1]


def main():
    state = os.path.abspath(arg("--state-dir"))
    listen = arg("--listen")
    host, port = listen.rsplit(":", 1)
    password = os.environ.get("YUNHE_ADMIN_PASSWORD", "secret")
    url = "http://%s/identity" % listen
    conf = os.path.join(state, "keystone.conf")
    with open(conf, "w") as f:
        f.write(f"""[DEFAULT]
log_file = {state}/keystone.log
[database]
connection = sqlite:///{state}/keystone.db
[fernet_tokens]
key_repository = {state}/fernet-keys
[fernet_receipts]
key_repository = {state}/fernet-receipts
[credential]
key_repository = {state}/credential-keys
[identity]
password_hash_rounds = 4
""")
    manage = [os.path.join(os.path.dirname(sys.executable), "keystone-manage"), "--config-file", conf]
    owner = ["--keystone-user", str(os.getuid()), "--keystone-group", str(os.getgid())]
    for step in (["db_sync"], ["fernet_setup"] + owner, ["credential_setup"] + owner,
                 ["bootstrap", "--bootstrap-password", password,
                  "--bootstrap-admin-url", url, "--bootstrap-public-url", url,
                  "--bootstrap-internal-url", url, "--bootstrap-region-id", "RegionOne"]):
        subprocess.run(manage + step, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with open(os.path.join(state, "clouds.yaml"), "w") as f:
        f.write(f"""clouds:
  yunhe:
    auth:
      auth_url: {url}
      username: admin
      password: "{password}"
      project_name: admin
      user_domain_name: Default
      project_domain_name: Default
    region_name: RegionOne
    identity_api_version: 3
""")
    with open(os.path.join(state, "admin-openrc.sh"), "w") as f:
        f.write(f"""export OS_AUTH_URL={url}
export OS_USERNAME=admin
export OS_PASSWORD='{password}'
export OS_PROJECT_NAME=admin
export OS_USER_DOMAIN_NAME=Default
export OS_PROJECT_DOMAIN_NAME=Default
export OS_REGION_NAME=RegionOne
export OS_IDENTITY_API_VERSION=3
""")
    os.environ["OS_KEYSTONE_CONFIG_FILES"] = conf
    sys.argv = sys.argv[:1]  # oslo.config parses sys.argv
    from keystone.server import wsgi as keystone_wsgi
    keystone = keystone_wsgi.initialize_public_application()

    def app(environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path == "/healthz":
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"ok\n"]
        if path == "/identity" or path.startswith("/identity/"):
            environ["SCRIPT_NAME"] = "/identity"
            environ["PATH_INFO"] = path[len("/identity"):]
            return keystone(environ, start_response)
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found\n"]

    class Server(socketserver.ThreadingMixIn, WSGIServer):
        daemon_threads = True

    class Quiet(WSGIRequestHandler):
        def log_message(self, *args):
            pass

    make_server(host, int(port), app, server_class=Server, handler_class=Quiet).serve_forever()


if __name__ == "__main__":
    main()
