//! OS-TRUST against the real `yunhe serve`: trusts, trust-scoped tokens,
//! remaining uses, expiry, redelegation and revocation.

mod support;

use serde_json::{Value, json};
use support::{Reply, Server};

const PASSWORD: &str = "trust-test-Passw0rd";

/// A server with project `tp`, roles `delegated` (implying `implied`) and
/// `kept`, the trustor alice holding `delegated` and `kept` on `tp`, and
/// the users bob and carol with no roles.
struct World {
    server: Server,
    admin: String,
    project: String,
    alice: String,
    bob: String,
    carol: String,
    delegated: String,
    implied: String,
    kept: String,
}

fn created(reply: Reply, what: &str) -> Value {
    assert_eq!(reply.status, 201, "{what}: {}", reply.text);
    reply.json()
}

fn subject(reply: &Reply) -> String {
    reply
        .header("x-subject-token")
        .expect("X-Subject-Token")
        .to_string()
}

impl World {
    fn new() -> World {
        World::with_args(&[])
    }

    fn with_args(args: &[&str]) -> World {
        let server = Server::start_with_args(args);
        let admin = server.admin_token();
        let post = |path: &str, body: Value| {
            server.request(
                "POST",
                &format!("/identity/v3{path}"),
                Some(&admin),
                Some(&body),
            )
        };
        let project = created(
            post(
                "/projects",
                json!({"project": {"name": "tp", "domain_id": "default"}}),
            ),
            "project",
        )["project"]["id"]
            .as_str()
            .expect("id")
            .to_string();
        let role = |name: &str| {
            created(post("/roles", json!({"role": {"name": name}})), name)["role"]["id"]
                .as_str()
                .expect("id")
                .to_string()
        };
        let (delegated, implied, kept) = (role("delegated"), role("implied"), role("kept"));
        let reply = server.request(
            "PUT",
            &format!("/identity/v3/roles/{delegated}/implies/{implied}"),
            Some(&admin),
            None,
        );
        assert_eq!(reply.status, 201, "implied role: {}", reply.text);
        let user = |name: &str| {
            created(
                post(
                    "/users",
                    json!({"user": {"name": name, "password": PASSWORD, "domain_id": "default"}}),
                ),
                name,
            )["user"]["id"]
                .as_str()
                .expect("id")
                .to_string()
        };
        let (alice, bob, carol) = (user("alice"), user("bob"), user("carol"));
        let world = World {
            server,
            admin,
            project,
            alice,
            bob,
            carol,
            delegated,
            implied,
            kept,
        };
        world.grant(&world.alice, &world.delegated);
        world.grant(&world.alice, &world.kept);
        world
    }

    fn grant(&self, user: &str, role: &str) {
        let path = format!(
            "/identity/v3/projects/{}/users/{user}/roles/{role}",
            self.project
        );
        let reply = self.server.request("PUT", &path, Some(&self.admin), None);
        assert_eq!(reply.status, 204, "grant: {}", reply.text);
    }

    fn revoke(&self, user: &str, role: &str) {
        let path = format!(
            "/identity/v3/projects/{}/users/{user}/roles/{role}",
            self.project
        );
        let reply = self
            .server
            .request("DELETE", &path, Some(&self.admin), None);
        assert_eq!(reply.status, 204, "revoke: {}", reply.text);
    }

    /// A password token of `user` (a name), scoped as given.
    fn token_scoped(&self, user: &str, scope: Option<Value>) -> Reply {
        let mut auth = json!({"auth": {"identity": {"methods": ["password"], "password": {"user": {
            "name": user, "domain": {"id": "default"}, "password": PASSWORD}}}}});
        if let Some(scope) = scope {
            auth["auth"]["scope"] = scope;
        }
        self.server
            .request("POST", "/identity/v3/auth/tokens", None, Some(&auth))
    }

    fn project_token(&self, user: &str) -> String {
        let reply = self.token_scoped(user, Some(json!({"project": {"id": self.project}})));
        assert_eq!(reply.status, 201, "{user} token: {}", reply.text);
        subject(&reply)
    }

    fn trust_token(&self, user: &str, trust_id: &str) -> Reply {
        self.token_scoped(user, Some(json!({"OS-TRUST:trust": {"id": trust_id}})))
    }

    fn create_trust(&self, token: &str, trust: Value) -> Reply {
        self.server.request(
            "POST",
            "/identity/v3/OS-TRUST/trusts",
            Some(token),
            Some(&json!({"trust": trust})),
        )
    }

    /// alice → bob on `tp` with `delegated`, plus `extra` members.
    fn alice_trusts_bob(&self, extra: Value) -> Reply {
        let alice = self.project_token("alice");
        let mut trust = json!({
            "trustor_user_id": self.alice,
            "trustee_user_id": self.bob,
            "project_id": self.project,
            "impersonation": false,
            "roles": [{"name": "delegated"}],
        });
        if let (Some(map), Some(more)) = (trust.as_object_mut(), extra.as_object()) {
            map.extend(more.clone());
        }
        self.create_trust(&alice, trust)
    }

    /// Validates `token` as the admin: the status.
    fn validate(&self, token: &str) -> u16 {
        let mut headers = vec![("X-Auth-Token", self.admin.clone())];
        headers.push(("X-Subject-Token", token.to_string()));
        support::http(
            &self.server.addr,
            "GET",
            "/identity/v3/auth/tokens",
            &headers,
            None,
        )
        .status
    }
}

fn role_names(token_body: &Value) -> Vec<String> {
    let mut names: Vec<String> = token_body["token"]["roles"]
        .as_array()
        .expect("roles")
        .iter()
        .filter_map(|r| r["name"].as_str().map(str::to_string))
        .collect();
    names.sort();
    names
}

#[test]
fn impersonating_trust_gives_the_trustor_and_only_the_delegated_roles() {
    let w = World::new();
    let trust =
        created(w.alice_trusts_bob(json!({"impersonation": true})), "trust")["trust"].clone();
    let id = trust["id"].as_str().expect("id").to_string();
    assert_eq!(trust["impersonation"], true);
    assert_eq!(trust["roles"][0]["name"], "delegated");
    assert_eq!(trust["roles"].as_array().expect("roles").len(), 1);
    assert_eq!(trust["redelegation_count"], 0);
    assert!(trust["expires_at"].is_null());

    let reply = w.trust_token("bob", &id);
    assert_eq!(reply.status, 201, "trust token: {}", reply.text);
    let body = reply.json();
    assert_eq!(body["token"]["user"]["id"], w.alice.as_str());
    assert_eq!(body["token"]["project"]["id"], w.project.as_str());
    assert_eq!(body["token"]["OS-TRUST:trust"]["id"], id.as_str());
    assert_eq!(body["token"]["OS-TRUST:trust"]["impersonation"], true);
    assert_eq!(
        body["token"]["OS-TRUST:trust"]["trustor_user"]["id"],
        w.alice.as_str()
    );
    assert_eq!(
        body["token"]["OS-TRUST:trust"]["trustee_user"]["id"],
        w.bob.as_str()
    );
    assert_eq!(role_names(&body), vec!["delegated", "implied"]);
    let token = subject(&reply);
    assert_eq!(w.validate(&token), 200);

    // The trust API: the trustor and the trustee see it, nobody else.
    w.grant(&w.carol, &w.kept);
    let carol = w.project_token("carol");
    let bob = subject(&w.token_scoped("bob", None));
    let path = format!("/identity/v3/OS-TRUST/trusts/{id}");
    assert_eq!(w.server.get(&path, Some(&bob)).status, 200);
    assert_eq!(w.server.get(&path, Some(&carol)).status, 403);
    let alice = w.project_token("alice");
    let roles = w.server.get(&format!("{path}/roles"), Some(&alice)).json();
    assert_eq!(roles["roles"].as_array().expect("roles").len(), 1);
    assert_eq!(
        w.server
            .get(&format!("{path}/roles/{}", w.delegated), Some(&alice))
            .status,
        200
    );
    assert_eq!(
        w.server
            .request(
                "HEAD",
                &format!("{path}/roles/{}", w.delegated),
                Some(&alice),
                None
            )
            .status,
        200
    );
    assert_eq!(
        w.server
            .get(&format!("{path}/roles/{}", w.kept), Some(&alice))
            .status,
        404
    );
    let mine = w.server.get(
        &format!("/identity/v3/OS-TRUST/trusts?trustor_user_id={}", w.alice),
        Some(&alice),
    );
    assert_eq!(mine.json()["trusts"].as_array().expect("trusts").len(), 1);
    assert_eq!(
        w.server
            .get("/identity/v3/OS-TRUST/trusts", Some(&alice))
            .status,
        403
    );
    let all = w
        .server
        .get("/identity/v3/OS-TRUST/trusts/", Some(&w.admin));
    assert_eq!(all.json()["trusts"].as_array().expect("trusts").len(), 1);
    assert_eq!(
        w.server
            .get(
                &format!("/identity/v3/OS-TRUST/trusts?trustee_user_id={}", w.bob),
                Some(&carol)
            )
            .status,
        403
    );
    // The implied role came with the delegated one; the trustor's other role did not.
    assert!(!role_names(&body).contains(&"kept".to_string()));
    let _ = &w.implied;
}

#[test]
fn trust_without_impersonation_keeps_the_trustee_and_needs_the_trustee() {
    let w = World::new();
    let id = created(w.alice_trusts_bob(json!({})), "trust")["trust"]["id"]
        .as_str()
        .expect("id")
        .to_string();
    let reply = w.trust_token("bob", &id);
    assert_eq!(reply.status, 201, "{}", reply.text);
    let body = reply.json();
    assert_eq!(body["token"]["user"]["id"], w.bob.as_str());
    assert_eq!(body["token"]["OS-TRUST:trust"]["impersonation"], false);
    // Not the trustee: 403; an unknown trust: 401.
    assert_eq!(w.trust_token("carol", &id).status, 403);
    assert_eq!(w.trust_token("bob", "no-such-trust").status, 401);
    // A trust token cannot be exchanged for another token.
    let rescope = json!({"auth": {"identity": {"methods": ["token"], "token": {"id": subject(&reply)}},
        "scope": {"project": {"id": w.project}}}});
    let reply = w
        .server
        .request("POST", "/identity/v3/auth/tokens", None, Some(&rescope));
    assert_eq!(reply.status, 403, "{}", reply.text);
    // A trust token cannot mint credentials that would outlive the trust.
    let trust_token = subject(&reply_for_credentials(&w, &id));
    let path = format!("/identity/v3/users/{}/application_credentials", w.bob);
    let reply = w.server.request(
        "POST",
        &path,
        Some(&trust_token),
        Some(&json!({"application_credential": {"name": "from-trust"}})),
    );
    assert_eq!(reply.status, 403, "{}", reply.text);
    assert_eq!(w.server.get(&path, Some(&trust_token)).status, 403);
    let ec2 = format!("/identity/v3/users/{}/credentials/OS-EC2", w.bob);
    let reply = w.server.request(
        "POST",
        &ec2,
        Some(&trust_token),
        Some(&json!({"tenant_id": w.project})),
    );
    assert_eq!(reply.status, 403, "{}", reply.text);
    // A trust token can be had with the token method too.
    let unscoped = subject(&w.token_scoped("bob", None));
    let by_token = json!({"auth": {"identity": {"methods": ["token"], "token": {"id": unscoped}},
        "scope": {"OS-TRUST:trust": {"id": id}}}});
    let reply = w
        .server
        .request("POST", "/identity/v3/auth/tokens", None, Some(&by_token));
    assert_eq!(reply.status, 201, "{}", reply.text);
}

#[test]
fn creation_is_validated_as_keystone_does() {
    let w = World::new();
    let alice = w.project_token("alice");
    let base = json!({
        "trustor_user_id": w.alice, "trustee_user_id": w.bob, "project_id": w.project,
        "impersonation": false, "roles": [{"name": "delegated"}],
    });
    let with = |k: &str, v: Value| {
        let mut t = base.clone();
        t[k] = v;
        t
    };
    // Someone else as trustor: 403 (the policy); a role alice lacks: 404.
    assert_eq!(
        w.create_trust(&alice, with("trustor_user_id", json!(w.bob)))
            .status,
        403
    );
    w.grant(&w.carol, &w.kept);
    let carol_role = created(
        w.server.request(
            "POST",
            "/identity/v3/roles",
            Some(&w.admin),
            Some(&json!({"role": {"name": "carols"}})),
        ),
        "role",
    )["role"]["id"]
        .as_str()
        .expect("id")
        .to_string();
    assert_eq!(
        w.create_trust(&alice, with("roles", json!([{"id": carol_role}])))
            .status,
        404
    );
    assert_eq!(w.create_trust(&alice, with("roles", json!([]))).status, 403);
    for (key, value) in [
        ("expires_at", json!("bad.123Z")),
        ("expires_at", json!("2001-01-01T00:00:00Z")),
        ("remaining_uses", json!(0)),
        ("impersonation", json!("yes")),
    ] {
        let reply = w.create_trust(&alice, with(key, value.clone()));
        assert_eq!(reply.status, 400, "{key}={value}: {}", reply.text);
    }
    let reply = w.create_trust(
        &alice,
        with("allow_redelegation", json!(true))
            .as_object()
            .map_or(base.clone(), |m| {
                let mut t = Value::Object(m.clone());
                t["redelegation_count"] = json!(4);
                t
            }),
    );
    assert_eq!(reply.status, 403, "depth above the maximum: {}", reply.text);
    let expires = "2099-02-03T04:05:06Z";
    let trust = created(
        w.create_trust(&alice, with("expires_at", json!(expires))),
        "trust",
    );
    assert_eq!(trust["trust"]["expires_at"], "2099-02-03T04:05:06.000000Z");
    // No project, no roles.
    let mut bare = base.clone();
    bare["project_id"] = Value::Null;
    bare["roles"] = json!([]);
    let trust = created(w.create_trust(&alice, bare), "bare trust");
    assert!(trust["trust"]["project_id"].is_null());
}

#[test]
fn remaining_uses_run_out() {
    let w = World::new();
    let id = created(w.alice_trusts_bob(json!({"remaining_uses": 2})), "trust")["trust"]["id"]
        .as_str()
        .expect("id")
        .to_string();
    let first = w.trust_token("bob", &id);
    assert_eq!(first.status, 201);
    assert_eq!(w.trust_token("bob", &id).status, 201);
    assert_eq!(w.trust_token("bob", &id).status, 401);
    // Tokens issued before the last use keep working.
    assert_eq!(w.validate(&subject(&first)), 200);
}

#[test]
fn an_expired_trust_gives_no_tokens_and_its_tokens_end_with_it() {
    let w = World::new();
    let expires = chrono::Utc::now() + chrono::Duration::seconds(3);
    let reply = w.alice_trusts_bob(
        json!({"expires_at": expires.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()}),
    );
    let id = created(reply, "trust")["trust"]["id"]
        .as_str()
        .expect("id")
        .to_string();
    let reply = w.trust_token("bob", &id);
    assert_eq!(reply.status, 201, "{}", reply.text);
    let token_expiry = reply.json()["token"]["expires_at"]
        .as_str()
        .expect("expires_at")
        .to_string();
    let token_expiry = chrono::DateTime::parse_from_rfc3339(&token_expiry).expect("time");
    assert!(token_expiry.timestamp() <= expires.timestamp());
    let token = subject(&reply);
    std::thread::sleep(std::time::Duration::from_secs(4));
    assert_eq!(w.trust_token("bob", &id).status, 401);
    assert_eq!(w.validate(&token), 404);
    let alice = w.project_token("alice");
    assert_eq!(
        w.server
            .get(&format!("/identity/v3/OS-TRUST/trusts/{id}"), Some(&alice))
            .status,
        404
    );
}

#[test]
fn redelegation_counts_down_and_narrows() {
    let w = World::new();
    w.grant(&w.alice, &w.implied);
    let alice = w.project_token("alice");
    let parent = created(
        w.create_trust(
            &alice,
            json!({
                "trustor_user_id": w.alice, "trustee_user_id": w.bob, "project_id": w.project,
                "impersonation": false, "roles": [{"name": "delegated"}, {"name": "kept"}],
                "allow_redelegation": true, "redelegation_count": 1,
            }),
        ),
        "parent",
    )["trust"]
        .clone();
    assert_eq!(parent["redelegation_count"], 1);
    let parent_id = parent["id"].as_str().expect("id");
    let bob_trust = subject(&w.trust_token("bob", parent_id));
    let child = json!({
        "trustor_user_id": w.bob, "trustee_user_id": w.carol, "project_id": w.project,
        "impersonation": false, "roles": [{"name": "delegated"}], "allow_redelegation": true,
    });
    // Roles outside the parent's are refused.
    let mut wider = child.clone();
    wider["roles"] = json!([{"name": "delegated"}, {"name": "implied"}]);
    assert_eq!(w.create_trust(&bob_trust, wider).status, 403);
    let created_child =
        created(w.create_trust(&bob_trust, child.clone()), "child")["trust"].clone();
    assert_eq!(created_child["redelegation_count"], 0);
    assert_eq!(created_child["redelegated_trust_id"], parent_id);
    let child_id = created_child["id"].as_str().expect("id").to_string();
    let reply = w.trust_token("carol", &child_id);
    assert_eq!(reply.status, 201, "{}", reply.text);
    assert_eq!(role_names(&reply.json()), vec!["delegated", "implied"]);
    let carol_trust = subject(&reply);
    // The chain ends: carol cannot redelegate further.
    let grandchild = json!({
        "trustor_user_id": w.carol, "trustee_user_id": w.alice, "project_id": w.project,
        "impersonation": false, "roles": [{"name": "delegated"}],
    });
    assert_eq!(w.create_trust(&carol_trust, grandchild).status, 403);
    // A trust that does not allow redelegation cannot be redelegated.
    let plain = created(w.alice_trusts_bob(json!({})), "plain")["trust"]["id"]
        .as_str()
        .expect("id")
        .to_string();
    let bob_plain = subject(&w.trust_token("bob", &plain));
    let mut again = child.clone();
    again["allow_redelegation"] = json!(false);
    assert_eq!(w.create_trust(&bob_plain, again).status, 403);
    // Deleting the parent deletes the child and revokes its tokens.
    let reply = w.server.request(
        "DELETE",
        &format!("/identity/v3/OS-TRUST/trusts/{parent_id}"),
        Some(&alice),
        None,
    );
    assert_eq!(reply.status, 204, "{}", reply.text);
    assert_eq!(w.validate(&carol_trust), 404);
    assert_eq!(w.trust_token("carol", &child_id).status, 401);
}

#[test]
fn trust_tokens_die_with_the_trustors_role_the_trustor_and_the_trust() {
    let w = World::new();
    let id = created(w.alice_trusts_bob(json!({})), "trust")["trust"]["id"]
        .as_str()
        .expect("id")
        .to_string();
    let token = subject(&w.trust_token("bob", &id));
    assert_eq!(w.validate(&token), 200);
    assert_eq!(
        w.server
            .get("/identity/v3/auth/projects", Some(&token))
            .status,
        200
    );
    // The trustor loses the delegated role: the token stops working and no
    // new one is issued; given back, the trust works again.
    w.revoke(&w.alice, &w.delegated);
    assert_eq!(w.validate(&token), 404);
    assert_eq!(
        w.server
            .get("/identity/v3/auth/projects", Some(&token))
            .status,
        401
    );
    assert_eq!(w.trust_token("bob", &id).status, 403);
    w.grant(&w.alice, &w.delegated);
    let token = subject(&w.trust_token("bob", &id));
    // The trustor is disabled.
    let disable = json!({"user": {"enabled": false}});
    let path = format!("/identity/v3/users/{}", w.alice);
    assert_eq!(
        w.server
            .request("PATCH", &path, Some(&w.admin), Some(&disable))
            .status,
        200
    );
    assert_eq!(w.validate(&token), 404);
    assert_eq!(w.trust_token("bob", &id).status, 403);
    let enable = json!({"user": {"enabled": true}});
    w.server
        .request("PATCH", &path, Some(&w.admin), Some(&enable));
    let token = subject(&w.trust_token("bob", &id));
    assert_eq!(w.validate(&token), 200);
    // The trustor's password is reset: the trust's tokens are revoked too.
    let reset = json!({"user": {"password": "trust-test-Passw0rd"}});
    assert_eq!(
        w.server
            .request("PATCH", &path, Some(&w.admin), Some(&reset))
            .status,
        200
    );
    assert_eq!(w.validate(&token), 404);
    let token = subject(&w.trust_token("bob", &id));
    assert_eq!(w.validate(&token), 200);
    // The trust is deleted (by the trustor; the trustee may not).
    let bob = w.project_token("alice");
    let trust_path = format!("/identity/v3/OS-TRUST/trusts/{id}");
    let bob_plain = subject(&w.token_scoped("bob", None));
    assert_eq!(
        w.server
            .request("DELETE", &trust_path, Some(&bob_plain), None)
            .status,
        403
    );
    assert_eq!(
        w.server
            .request("DELETE", &trust_path, Some(&bob), None)
            .status,
        204
    );
    assert_eq!(w.validate(&token), 404);
    assert_eq!(w.server.get(&trust_path, Some(&bob)).status, 404);
    // Deleting the trustor deletes its trusts.
    let id = created(w.alice_trusts_bob(json!({})), "trust")["trust"]["id"]
        .as_str()
        .expect("id")
        .to_string();
    let token = subject(&w.trust_token("bob", &id));
    assert_eq!(
        w.server
            .request("DELETE", &path, Some(&w.admin), None)
            .status,
        204
    );
    assert_eq!(w.validate(&token), 404);
    assert_eq!(w.trust_token("bob", &id).status, 401);
}

#[test]
fn the_redelegation_depth_limit_is_configurable() {
    let w = World::with_args(&["--trust-max-redelegation-count", "1"]);
    let deep = w.alice_trusts_bob(json!({"allow_redelegation": true, "redelegation_count": 2}));
    assert_eq!(deep.status, 403, "{}", deep.text);
    let trust = created(
        w.alice_trusts_bob(json!({"allow_redelegation": true})),
        "trust",
    );
    assert_eq!(trust["trust"]["redelegation_count"], 1);
}

fn reply_for_credentials(w: &World, trust_id: &str) -> Reply {
    let reply = w.trust_token("bob", trust_id);
    assert_eq!(reply.status, 201, "{}", reply.text);
    reply
}
