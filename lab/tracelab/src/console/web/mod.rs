//! The console's web page: one HTML file, ES modules, a style sheet and an
//! icon from `lab/tracelab/console-web/`, compiled into the binary (no
//! Node.js to build it, nothing fetched from elsewhere at run time, so the
//! page works offline). The page talks only to the console's `/api/...`.
//!
//! Every answer carries an `ETag` (a hash of the file, computed at compile
//! time) and `Cache-Control: no-cache`: the browser keeps its copy and asks
//! again each time, and a rebuilt binary with a changed file is seen at the
//! next load (`304 Not Modified` otherwise).

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// One embedded file.
#[derive(Debug)]
pub(crate) struct Asset {
    /// Path under `console-web/` (and under `/assets/` in URLs).
    pub(crate) path: &'static str,
    /// `Content-Type` it is served with.
    pub(crate) content_type: &'static str,
    /// The file.
    pub(crate) bytes: &'static [u8],
    /// Its `ETag` value, quotes included.
    pub(crate) etag: &'static str,
}

/// FNV-1a, 64 bits: a content hash cheap enough for a `const`.
const fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0100_0000_01b3);
        i += 1;
    }
    hash
}

/// `"` + 16 hex digits of the hash + `"`, as bytes.
const fn etag_bytes(bytes: &[u8]) -> [u8; 18] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let hash = fnv1a(bytes);
    let mut out = [b'"'; 18];
    let mut i = 0;
    while i < 16 {
        out[1 + i] = HEX[((hash >> (60 - 4 * i)) & 0xf) as usize];
        i += 1;
    }
    out
}

macro_rules! asset {
    ($path:literal, $type:expr) => {{
        const BYTES: &[u8] = include_bytes!(concat!("../../../console-web/", $path));
        const ETAG: [u8; 18] = etag_bytes(BYTES);
        Asset {
            path: $path,
            content_type: $type,
            bytes: BYTES,
            etag: match std::str::from_utf8(&ETAG) {
                Ok(s) => s,
                Err(_) => panic!("an ETag is ASCII"),
            },
        }
    }};
}

const JS: &str = "text/javascript; charset=utf-8";

/// Every file of the page. `tests` checks that each file under
/// `console-web/` is listed here.
pub(crate) static ASSETS: &[Asset] = &[
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("style.css", "text/css; charset=utf-8"),
    asset!("icon.svg", "image/svg+xml"),
    asset!("js/app.js", JS),
    asset!("js/api.js", JS),
    asset!("js/dom.js", JS),
    asset!("js/i18n.js", JS),
    asset!("js/messages.js", JS),
    asset!("js/model.js", JS),
    asset!("js/servicemap.js", JS),
    asset!("js/views/compare.js", JS),
    asset!("js/views/dlq.js", JS),
    asset!("js/views/exercise.js", JS),
    asset!("js/views/faults.js", JS),
    asset!("js/views/lab.js", JS),
    asset!("js/views/sampling.js", JS),
    asset!("js/views/trace.js", JS),
    asset!("js/views/traces.js", JS),
    asset!("js/views/waterfall.js", JS),
];

/// The page's own policy: everything from this origin, nothing inline,
/// never framed.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'";

/// The page's routes: `/` (the page) and `/assets/{path}` (its files).
pub(crate) fn router() -> Router {
    Router::new()
        .route("/", get(index))
        .route("/index.html", get(index))
        .route("/assets/{*path}", get(asset))
}

async fn index(headers: HeaderMap) -> Response {
    serve(
        find("index.html").expect("index.html is embedded"),
        &headers,
    )
}

async fn asset(Path(path): Path<String>, headers: HeaderMap) -> Response {
    match find(&path) {
        Some(a) if a.path != "index.html" => serve(a, &headers),
        _ => (
            StatusCode::NOT_FOUND,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "no such file in the console's page\n",
        )
            .into_response(),
    }
}

pub(crate) fn find(path: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.path == path)
}

/// The file, or `304 Not Modified` when the browser already holds this version.
fn serve(a: &'static Asset, request: &HeaderMap) -> Response {
    let fresh = request
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|tag| {
            let tag = tag.trim();
            tag == "*" || tag.trim_start_matches("W/") == a.etag
        });
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(header::CONTENT_TYPE, a.content_type)], a.bytes).into_response()
    };
    let h = response.headers_mut();
    h.insert(header::ETAG, HeaderValue::from_static(a.etag));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if a.path == "index.html" {
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        );
        h.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        );
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt as _;

    fn files_on_disk(dir: &std::path::Path, base: &std::path::Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                files_on_disk(&path, base, out);
            } else {
                let rel = path.strip_prefix(base).unwrap().to_string_lossy();
                out.push(rel.replace('\\', "/"));
            }
        }
    }

    #[test]
    fn every_file_of_the_page_is_embedded_once() {
        let base = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("console-web");
        let mut on_disk = Vec::new();
        files_on_disk(&base, &base, &mut on_disk);
        on_disk.sort();
        let mut embedded: Vec<String> = ASSETS.iter().map(|a| a.path.to_string()).collect();
        embedded.sort();
        assert_eq!(
            embedded, on_disk,
            "console-web/ and ASSETS in console/web/mod.rs differ"
        );
    }

    #[test]
    fn the_page_weighs_less_than_300_kb() {
        let total: usize = ASSETS.iter().map(|a| a.bytes.len()).sum();
        assert!(total > 10_000, "the page is suspiciously small: {total} B");
        assert!(total < 300 * 1024, "the page weighs {total} B, over 300 KB");
    }

    #[test]
    fn etags_differ_between_files_and_match_the_content() {
        let mut tags: Vec<&str> = ASSETS.iter().map(|a| a.etag).collect();
        tags.sort();
        tags.dedup();
        assert_eq!(tags.len(), ASSETS.len());
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        let a = find("js/app.js").unwrap();
        assert_eq!(a.etag, format!("\"{:016x}\"", fnv1a(a.bytes)));
    }

    async fn get(path: &str, if_none_match: Option<&str>) -> Response {
        let mut req = Request::get(path);
        if let Some(tag) = if_none_match {
            req = req.header(header::IF_NONE_MATCH, tag);
        }
        router()
            .oneshot(req.body(Body::empty()).unwrap())
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn serves_the_page_with_its_type_etag_and_policy() {
        let res = get("/", None).await;
        assert_eq!(res.status(), StatusCode::OK);
        let h = res.headers();
        assert_eq!(h[header::CONTENT_TYPE], "text/html; charset=utf-8");
        assert_eq!(h[header::CACHE_CONTROL], "no-cache");
        assert_eq!(h[header::ETAG], find("index.html").unwrap().etag);
        assert!(
            h[header::CONTENT_SECURITY_POLICY]
                .to_str()
                .unwrap()
                .contains("default-src 'self'")
        );
        let body = axum::body::to_bytes(res.into_body(), usize::MAX)
            .await
            .unwrap();
        assert!(
            std::str::from_utf8(&body)
                .unwrap()
                .contains("assets/js/app.js")
        );

        let js = get("/assets/js/views/trace.js", None).await;
        assert_eq!(js.status(), StatusCode::OK);
        assert_eq!(js.headers()[header::CONTENT_TYPE], JS);
        let svg = get("/assets/icon.svg", None).await;
        assert_eq!(svg.headers()[header::CONTENT_TYPE], "image/svg+xml");
    }

    #[tokio::test]
    async fn answers_304_to_a_current_etag_and_200_to_an_old_one() {
        let a = find("style.css").unwrap();
        let same = get("/assets/style.css", Some(a.etag)).await;
        assert_eq!(same.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(same.headers()[header::ETAG], a.etag);
        let listed = get("/assets/style.css", Some(&format!("\"old\", W/{}", a.etag))).await;
        assert_eq!(listed.status(), StatusCode::NOT_MODIFIED);
        let old = get("/assets/style.css", Some("\"0000000000000000\"")).await;
        assert_eq!(old.status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn unknown_files_are_404() {
        for path in [
            "/assets/nope.js",
            "/assets/../Cargo.toml",
            "/assets/index.html",
            "/assets/",
        ] {
            let res = get(path, None).await;
            assert_eq!(res.status(), StatusCode::NOT_FOUND, "{path}");
        }
    }
}
