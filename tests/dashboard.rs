//! The dashboard as the real server serves it: the page and its modules, the
//! Content-Security-Policy on every response, gzip when asked, ETag revalidation.
//! (Its flows in a browser: tests/browser/run.sh.)

mod support;

use std::io::Read;

use support::{Server, http_bytes};

#[test]
fn the_page_and_its_files_are_served_with_a_strict_policy() {
    let server = Server::start();
    let page = http_bytes(&server.addr, "GET", "/", &[], b"");
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    let csp = page.header("content-security-policy").expect("a CSP");
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(
        !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
        "{csp}"
    );
    assert_eq!(page.header("x-content-type-options"), Some("nosniff"));
    let html = String::from_utf8_lossy(&page.body);
    assert!(html.contains("/ui/app.js"), "{html}");

    let js = http_bytes(&server.addr, "GET", "/ui/app.js", &[], b"");
    assert_eq!(js.status, 200);
    assert_eq!(
        js.header("content-type"),
        Some("text/javascript; charset=utf-8")
    );
    assert!(js.header("content-security-policy").is_some());

    let module = http_bytes(&server.addr, "GET", "/ui/pages/instances.js", &[], b"");
    assert_eq!(module.status, 200);

    let missing = http_bytes(&server.addr, "GET", "/ui/no-such-file.js", &[], b"");
    assert_eq!(missing.status, 404);
    assert!(missing.header("content-security-policy").is_some());
}

#[test]
fn files_are_gzipped_when_asked_and_revalidated_by_etag() {
    let server = Server::start();
    let plain = http_bytes(&server.addr, "GET", "/ui/ui.js", &[], b"");
    assert_eq!(plain.status, 200);
    assert_eq!(plain.header("content-encoding"), None);
    let gz = http_bytes(
        &server.addr,
        "GET",
        "/ui/ui.js",
        &[("Accept-Encoding", "gzip, deflate, br".into())],
        b"",
    );
    assert_eq!(gz.status, 200);
    assert_eq!(gz.header("content-encoding"), Some("gzip"));
    assert!(
        gz.body.len() < plain.body.len() / 2,
        "{} vs {}",
        gz.body.len(),
        plain.body.len()
    );
    let mut unzipped = Vec::new();
    flate2::read::GzDecoder::new(&gz.body[..])
        .read_to_end(&mut unzipped)
        .expect("valid gzip");
    assert_eq!(unzipped, plain.body);

    let etag = plain.header("etag").expect("an ETag").to_string();
    assert_eq!(gz.header("etag"), Some(etag.as_str()));
    let again = http_bytes(
        &server.addr,
        "GET",
        "/ui/ui.js",
        &[("If-None-Match", etag.clone())],
        b"",
    );
    assert_eq!(again.status, 304);
    assert!(again.body.is_empty());
    assert_eq!(again.header("cache-control"), Some("no-cache"));
}

/// axe-core is a test tool (tests/browser/vendor/axe-core): it is injected by the browser
/// flows, never embedded in the binary nor served to users; the new pages are.
#[test]
fn the_test_only_accessibility_engine_is_not_served() {
    let server = Server::start();
    for path in [
        "/ui/axe.min.js",
        "/ui/vendor/axe-core/axe.min.js",
        "/ui/tests/browser/vendor/axe-core/axe.min.js",
    ] {
        let r = http_bytes(&server.addr, "GET", path, &[], b"");
        assert_eq!(r.status, 404, "{path}");
    }
    for page in ["network.js", "volumes.js", "overview.js"] {
        let r = http_bytes(&server.addr, "GET", &format!("/ui/pages/{page}"), &[], b"");
        assert_eq!(r.status, 200, "{page}");
        assert!(
            !String::from_utf8_lossy(&r.body).contains("Deque Systems"),
            "{page}"
        );
    }
}
