//! OS-FEDERATION against the real `yunhe serve`: the resource API, and an
//! OpenID Connect login with JWTs from a small provider of the test's own
//! on 127.0.0.1 (discovery document and JWKS; ES256 keys made with ring).

mod support;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::Arc;

use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use serde_json::{Value, json};
use support::{Server, http};

fn enc(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// A signing key and its public JWK.
struct Key {
    pair: EcdsaKeyPair,
    kid: String,
}

impl Key {
    fn new(kid: &str) -> Key {
        let rng = SystemRandom::new();
        let pkcs8 =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).expect("key");
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .expect("pair");
        Key {
            pair,
            kid: kid.into(),
        }
    }

    fn jwk(&self) -> Value {
        let point = self.pair.public_key().as_ref();
        json!({"kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": self.kid,
            "x": enc(&point[1..33]), "y": enc(&point[33..65])})
    }

    fn sign(&self, claims: &Value) -> String {
        let header = enc(json!({"alg": "ES256", "typ": "JWT", "kid": self.kid})
            .to_string()
            .as_bytes());
        let signed = format!("{header}.{}", enc(claims.to_string().as_bytes()));
        let signature = self
            .pair
            .sign(&SystemRandom::new(), signed.as_bytes())
            .expect("sign");
        format!("{signed}.{}", enc(signature.as_ref()))
    }
}

/// Serves `/.well-known/openid-configuration` and `/jwks` on 127.0.0.1;
/// the issuer URL.
fn start_provider(jwks: Value) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let issuer = format!("http://{}", listener.local_addr().expect("addr"));
    let discovery = json!({"issuer": issuer, "jwks_uri": format!("{issuer}/jwks"),
        "token_endpoint": format!("{issuer}/token")});
    let documents = Arc::new((discovery.to_string(), jwks.to_string()));
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut buf = [0u8; 4096];
            let n = stream.read(&mut buf).unwrap_or(0);
            let request = String::from_utf8_lossy(&buf[..n]);
            let path = request.split_whitespace().nth(1).unwrap_or("");
            let body = match path {
                "/.well-known/openid-configuration" => documents.0.clone(),
                "/jwks" => documents.1.clone(),
                _ => String::new(),
            };
            let status = if body.is_empty() {
                "404 Not Found"
            } else {
                "200 OK"
            };
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    issuer
}

fn claims(issuer: &str, sub: &str, groups: &[&str]) -> Value {
    json!({"iss": issuer, "aud": "yunhe", "sub": sub, "preferred_username": sub,
        "email": format!("{sub}@example.org"), "groups": groups,
        "iat": now(), "exp": now() + 300})
}

fn federated_login(server: &Server, idp: &str, token: &str) -> support::Reply {
    http(
        &server.addr,
        "POST",
        &format!("/identity/v3/OS-FEDERATION/identity_providers/{idp}/protocols/openid/auth"),
        &[("Authorization", format!("Bearer {token}"))],
        None,
    )
}

#[test]
fn resource_api_has_keystones_shapes() {
    let server = Server::start();
    let admin = server.admin_token();
    let t = Some(admin.as_str());
    let base = "/identity/v3/OS-FEDERATION";

    let reply = server.request(
        "PUT",
        &format!("{base}/identity_providers/acme"),
        t,
        Some(&json!({"identity_provider": {"remote_ids": ["https://acme"], "description": "d"}})),
    );
    assert_eq!(reply.status, 201, "{}", reply.text);
    let idp = &reply.json()["identity_provider"];
    assert_eq!(idp["id"], "acme");
    assert_eq!(idp["enabled"], false, "disabled unless asked");
    assert_eq!(idp["remote_ids"], json!(["https://acme"]));
    let domain_id = idp["domain_id"].as_str().expect("a domain was made");
    assert_eq!(
        server
            .get(&format!("/identity/v3/domains/{domain_id}"), t)
            .status,
        200
    );
    assert!(
        idp["links"]["protocols"]
            .as_str()
            .is_some_and(|l| l.ends_with("/acme/protocols"))
    );
    let dup = server.request(
        "PUT",
        &format!("{base}/identity_providers/acme"),
        t,
        Some(&json!({"identity_provider": {}})),
    );
    assert_eq!(dup.status, 409);
    let taken = server.request(
        "PUT",
        &format!("{base}/identity_providers/other"),
        t,
        Some(&json!({"identity_provider": {"remote_ids": ["https://acme"]}})),
    );
    assert_eq!(taken.status, 409, "remote ids are unique");
    let unknown = server.request(
        "PUT",
        &format!("{base}/identity_providers/x"),
        t,
        Some(&json!({"identity_provider": {"bogus": 1}})),
    );
    assert_eq!(unknown.status, 400);
    let patched = server.request(
        "PATCH",
        &format!("{base}/identity_providers/acme"),
        t,
        Some(&json!({"identity_provider": {"enabled": true, "authorization_ttl": 5}})),
    );
    assert_eq!(patched.status, 200, "{}", patched.text);
    assert_eq!(patched.json()["identity_provider"]["authorization_ttl"], 5);
    let list = server.get(&format!("{base}/identity_providers?enabled=true"), t);
    assert_eq!(
        list.json()["identity_providers"].as_array().map(Vec::len),
        Some(1)
    );

    let bad_mapping = server.request(
        "PUT",
        &format!("{base}/mappings/m"),
        t,
        Some(&json!({"mapping": {"rules": [{"local": [], "remote": []}]}})),
    );
    assert_eq!(bad_mapping.status, 400);
    let rules = json!([{"local": [{"user": {"name": "{0}"}}], "remote": [{"type": "sub"}]}]);
    let mapping = server.request(
        "PUT",
        &format!("{base}/mappings/m"),
        t,
        Some(&json!({"mapping": {"rules": rules}})),
    );
    assert_eq!(mapping.status, 201, "{}", mapping.text);
    assert_eq!(mapping.json()["mapping"]["schema_version"], "1.0");

    let missing_mapping = server.request(
        "PUT",
        &format!("{base}/identity_providers/acme/protocols/openid"),
        t,
        Some(&json!({"protocol": {"mapping_id": "nope"}})),
    );
    assert_eq!(missing_mapping.status, 404);
    let protocol = server.request(
        "PUT",
        &format!("{base}/identity_providers/acme/protocols/openid"),
        t,
        Some(&json!({"protocol": {"mapping_id": "m"}})),
    );
    assert_eq!(protocol.status, 201, "{}", protocol.text);
    assert_eq!(protocol.json()["protocol"]["mapping_id"], "m");
    let protocols = server.get(&format!("{base}/identity_providers/acme/protocols"), t);
    assert_eq!(protocols.json()["protocols"][0]["id"], "openid");

    let sp = server.request(
        "PUT",
        &format!("{base}/service_providers/sp1"),
        t,
        Some(&json!({"service_provider": {"auth_url": "https://sp/identity/v3/OS-FEDERATION/identity_providers/x/protocols/saml2/auth", "sp_url": "https://sp/Shibboleth.sso/SAML2/ECP"}})),
    );
    assert_eq!(sp.status, 201, "{}", sp.text);
    assert_eq!(
        sp.json()["service_provider"]["relay_state_prefix"],
        "ss:mem:"
    );
    assert_eq!(sp.json()["service_provider"]["enabled"], false);
    let no_url = server.request(
        "PUT",
        &format!("{base}/service_providers/sp2"),
        t,
        Some(&json!({"service_provider": {"auth_url": "https://x"}})),
    );
    assert_eq!(no_url.status, 400);

    for path in [
        "service_providers/sp1",
        "identity_providers/acme/protocols/openid",
        "mappings/m",
        "identity_providers/acme",
    ] {
        let reply = server.request("DELETE", &format!("{base}/{path}"), t, None);
        assert_eq!(reply.status, 204, "{path}: {}", reply.text);
        assert_eq!(
            server.get(&format!("{base}/{path}"), t).status,
            404,
            "{path}"
        );
    }
}

#[test]
fn openid_connect_login_maps_claims_to_a_shadow_user_and_groups() {
    let key = Key::new("k1");
    let issuer = start_provider(json!({"keys": [key.jwk()]}));
    let server = Server::start();
    let admin = server.admin_token();
    let t = Some(admin.as_str());
    let base = "/identity/v3/OS-FEDERATION";

    // A group with a role on a project: what the mapping gives.
    let group = server.request(
        "POST",
        "/identity/v3/groups",
        t,
        Some(&json!({"group": {"name": "devs", "domain_id": "default"}})),
    );
    let group_id = group.json()["group"]["id"]
        .as_str()
        .expect("group")
        .to_string();
    let project = server.request(
        "POST",
        "/identity/v3/projects",
        t,
        Some(&json!({"project": {"name": "fedproj", "domain_id": "default"}})),
    );
    let project_id = project.json()["project"]["id"]
        .as_str()
        .expect("project")
        .to_string();
    let roles = server.get("/identity/v3/roles?name=member", t).json();
    let member = roles["roles"][0]["id"]
        .as_str()
        .expect("member role")
        .to_string();
    let grant = server.request(
        "PUT",
        &format!("/identity/v3/projects/{project_id}/groups/{group_id}/roles/{member}"),
        t,
        None,
    );
    assert_eq!(grant.status, 204, "{}", grant.text);

    let idp = server.request(
        "PUT",
        &format!("{base}/identity_providers/acme"),
        t,
        Some(&json!({"identity_provider": {"remote_ids": [issuer], "enabled": true}})),
    );
    assert_eq!(idp.status, 201, "{}", idp.text);
    let rules = json!([{
        "local": [{"user": {"name": "{0}", "email": "{1}"}}, {"group": {"id": group_id}}],
        "remote": [{"type": "preferred_username"}, {"type": "email"},
                   {"type": "groups", "any_one_of": ["dev"]}]
    }]);
    assert_eq!(
        server
            .request(
                "PUT",
                &format!("{base}/mappings/m"),
                t,
                Some(&json!({"mapping": {"rules": rules}}))
            )
            .status,
        201
    );
    assert_eq!(
        server
            .request(
                "PUT",
                &format!("{base}/identity_providers/acme/protocols/openid"),
                t,
                Some(&json!({"protocol": {"mapping_id": "m"}})),
            )
            .status,
        201
    );

    let reply = federated_login(
        &server,
        "acme",
        &key.sign(&claims(&issuer, "alice", &["dev"])),
    );
    assert_eq!(reply.status, 201, "{}", reply.text);
    let token = reply.header("x-subject-token").expect("token").to_string();
    let body = reply.json();
    assert_eq!(body["token"]["methods"], json!(["openid"]));
    let user = &body["token"]["user"];
    assert_eq!(user["name"], "alice");
    assert_eq!(user["OS-FEDERATION"]["identity_provider"]["id"], "acme");
    assert_eq!(user["OS-FEDERATION"]["protocol"]["id"], "openid");
    assert_eq!(user["OS-FEDERATION"]["groups"][0]["id"], group_id.as_str());
    let idp_domain = server
        .get(&format!("{base}/identity_providers/acme"), t)
        .json()["identity_provider"]["domain_id"]
        .clone();
    assert_eq!(
        user["domain"]["id"], idp_domain,
        "shadow users live in the IdP's domain"
    );

    // The groups' projects, and a token scoped to one of them.
    for path in [
        "/identity/v3/OS-FEDERATION/projects",
        "/identity/v3/auth/projects",
    ] {
        let projects = server.get(path, Some(&token)).json();
        assert_eq!(projects["projects"][0]["id"], project_id.as_str(), "{path}");
    }
    let scoped = server.request(
        "POST",
        "/identity/v3/auth/tokens",
        None,
        Some(
            &json!({"auth": {"identity": {"methods": ["token"], "token": {"id": token}},
            "scope": {"project": {"id": project_id}}}}),
        ),
    );
    assert_eq!(scoped.status, 201, "{}", scoped.text);
    let scoped = scoped.json();
    let role_names: Vec<&str> = scoped["token"]["roles"]
        .as_array()
        .map(|roles| roles.iter().filter_map(|r| r["name"].as_str()).collect())
        .unwrap_or_default();
    assert!(role_names.contains(&"member"), "{role_names:?}");
    assert_eq!(
        scoped["token"]["user"]["OS-FEDERATION"]["protocol"]["id"],
        "openid"
    );

    // The same login through /v3/auth/tokens, unscoped and straight to a project.
    let body = json!({"auth": {"identity": {"methods": ["openid"],
        "openid": {"identity_provider": "acme", "protocol": "openid"}}}});
    let bearer = [(
        "Authorization",
        format!("Bearer {}", key.sign(&claims(&issuer, "alice", &["dev"]))),
    )];
    let unscoped = http(
        &server.addr,
        "POST",
        "/identity/v3/auth/tokens",
        &bearer,
        Some(&body),
    );
    assert_eq!(unscoped.status, 201, "{}", unscoped.text);
    assert_eq!(unscoped.json()["token"]["user"]["id"], user["id"]);
    let mut scoped_body = body.clone();
    scoped_body["auth"]["scope"] = json!({"project": {"id": project_id}});
    let direct = http(
        &server.addr,
        "POST",
        "/identity/v3/auth/tokens",
        &bearer,
        Some(&scoped_body),
    );
    assert_eq!(direct.status, 201, "{}", direct.text);
    assert_eq!(direct.json()["token"]["project"]["id"], project_id.as_str());
    let no_bearer = http(
        &server.addr,
        "POST",
        "/identity/v3/auth/tokens",
        &[],
        Some(&body),
    );
    assert_eq!(no_bearer.status, 401);

    // The same subject logs in as the same user.
    let again = federated_login(
        &server,
        "acme",
        &key.sign(&claims(&issuer, "alice", &["dev"])),
    );
    assert_eq!(again.json()["token"]["user"]["id"], user["id"]);

    // Refusals: 401 for every bad token.
    let stranger = Key::new("k1");
    let mut wrong_iss = claims(&issuer, "alice", &["dev"]);
    wrong_iss["iss"] = json!("http://127.0.0.1:1");
    let mut wrong_aud = claims(&issuer, "alice", &["dev"]);
    wrong_aud["aud"] = json!("someone-else");
    let mut expired = claims(&issuer, "alice", &["dev"]);
    expired["exp"] = json!(now() - 3600);
    for (what, token) in [
        (
            "bad signature",
            stranger.sign(&claims(&issuer, "alice", &["dev"])),
        ),
        ("wrong issuer", key.sign(&wrong_iss)),
        ("wrong audience", key.sign(&wrong_aud)),
        ("expired", key.sign(&expired)),
        ("unmapped", key.sign(&claims(&issuer, "bob", &["hr"]))),
        ("not a JWT", "garbage".to_string()),
    ] {
        let reply = federated_login(&server, "acme", &token);
        assert_eq!(reply.status, 401, "{what}: {}", reply.text);
    }
    let no_header = http(
        &server.addr,
        "POST",
        &format!("{base}/identity_providers/acme/protocols/openid/auth"),
        &[],
        None,
    );
    assert_eq!(no_header.status, 401);

    // A disabled IdP refuses logins; deleting it deletes its users.
    server.request(
        "PATCH",
        &format!("{base}/identity_providers/acme"),
        t,
        Some(&json!({"identity_provider": {"enabled": false}})),
    );
    let disabled = federated_login(
        &server,
        "acme",
        &key.sign(&claims(&issuer, "alice", &["dev"])),
    );
    assert_eq!(disabled.status, 403);
    let user_id = user["id"].as_str().expect("user id");
    server.request(
        "DELETE",
        &format!("{base}/identity_providers/acme"),
        t,
        None,
    );
    assert_eq!(
        server
            .get(&format!("/identity/v3/users/{user_id}"), t)
            .status,
        404
    );
    assert_eq!(
        server
            .get("/identity/v3/auth/projects", Some(&token))
            .status,
        401
    );
}

#[test]
fn local_users_must_exist() {
    let key = Key::new("k2");
    let issuer = start_provider(json!({"keys": [key.jwk()]}));
    let server = Server::start();
    let admin = server.admin_token();
    let t = Some(admin.as_str());
    let base = "/identity/v3/OS-FEDERATION";
    server.request(
        "PUT",
        &format!("{base}/identity_providers/corp"),
        t,
        Some(&json!({"identity_provider": {"remote_ids": [issuer], "enabled": true, "domain_id": "default"}})),
    );
    let rules = json!([{"local": [{"user": {"name": "{0}", "domain": {"id": "default"}, "type": "local"}}],
        "remote": [{"type": "sub"}]}]);
    server.request(
        "PUT",
        &format!("{base}/mappings/local"),
        t,
        Some(&json!({"mapping": {"rules": rules}})),
    );
    server.request(
        "PUT",
        &format!("{base}/identity_providers/corp/protocols/openid"),
        t,
        Some(&json!({"protocol": {"mapping_id": "local"}})),
    );
    let nobody = federated_login(&server, "corp", &key.sign(&claims(&issuer, "nobody", &[])));
    assert_eq!(nobody.status, 401, "{}", nobody.text);
    let admin_login = federated_login(&server, "corp", &key.sign(&claims(&issuer, "admin", &[])));
    assert_eq!(admin_login.status, 201, "{}", admin_login.text);
    let user = &admin_login.json()["token"]["user"];
    assert_eq!(user["name"], "admin");
    assert!(
        user.get("OS-FEDERATION").is_none(),
        "a local user is not a federated one"
    );
}
