//! The route table (compile, then longest-prefix `find`), the path
//! normaliser behind `strip_prefix`, `has_dot_segments` and `is_under`.
//!
//! Input: text; the lines before the first empty line are route prefixes
//! (a leading `-` strips the prefix), the lines after it request paths.
//!
//! Properties: `find` picks a route exactly when one matches segment by
//! segment, and one with the most segments, then the most literal ones,
//! naming its `{owner}` segment; without `strip_prefix` the path goes
//! upstream unchanged, with it the normalised rest, and normalising is
//! idempotent; a path `has_dot_segments` lets through has no `.` or `..`
//! segment even once percent-decoded; `is_under` is "equal, or below at a
//! `/`".

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use swarmgate_gateway::routes::{has_dot_segments, is_under};
use swarmgate_gateway::{GatewayConfig, RouteConfig, RouteTable};
use swarmgate_server::http::OWN_PREFIXES;

fn route(name: String, prefix: &str, strip: bool) -> RouteConfig {
    RouteConfig {
        name,
        path_prefix: prefix.to_string(),
        upstreams: vec!["http://127.0.0.1:1".into()],
        permissions: Default::default(),
        permission: Some("x.read".into()),
        strip_prefix: strip,
        timeout_ms: 1000,
    }
}

/// One route that strips `/n`: what is left is the normalised path.
fn normalise(path: &str) -> String {
    static TABLE: OnceLock<RouteTable> = OnceLock::new();
    let table = TABLE.get_or_init(|| {
        RouteTable::compile(
            &[route("n".into(), "/n", true)],
            &GatewayConfig::default(),
            &[],
        )
        .expect("a plain route compiles")
    });
    let m = table
        .find(&format!("/n/{path}"))
        .expect("every path under /n matches");
    m.upstream_path
}

fn segments(path: &str) -> Vec<&str> {
    path.split('/').filter(|s| !s.is_empty()).collect()
}

/// Whether `prefix` matches `path` segment by segment, and its owner.
fn matches<'a>(prefix: &str, path: &'a str) -> Option<Option<&'a str>> {
    let (want, have) = (segments(prefix), segments(path));
    if have.len() < want.len() {
        return None;
    }
    let mut owner = None;
    for (w, h) in want.iter().zip(&have) {
        if *w == "{owner}" {
            owner = Some(*h);
        } else if w != h {
            return None;
        }
    }
    Some(owner)
}

/// Longer first: segments, then literal segments.
fn rank(prefix: &str) -> (usize, usize) {
    let segs = segments(prefix);
    let literals = segs.iter().filter(|s| **s != "{owner}").count();
    (segs.len(), literals)
}

fn percent_decode(path: &str) -> Vec<u8> {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

fn check_path(path: &str) {
    if !has_dot_segments(path) {
        let decoded = percent_decode(path);
        for segment in decoded.split(|b| *b == b'/' || *b == b'\\') {
            assert!(segment != b"." && segment != b"..", "{path:?}");
        }
    }
    for prefix in OWN_PREFIXES {
        let expected = path == *prefix
            || path
                .strip_prefix(prefix)
                .is_some_and(|rest| rest.starts_with('/'));
        assert_eq!(is_under(path, &[*prefix]), expected, "{path:?} {prefix}");
    }
    let once = normalise(path);
    assert!(once.starts_with('/'), "{path:?} -> {once:?}");
    assert_eq!(normalise(&once), once, "{path:?}");
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (routes, paths) = text.split_once("\n\n").unwrap_or((text, ""));
    let configs: Vec<RouteConfig> = routes
        .lines()
        .take(32)
        .enumerate()
        .map(|(i, line)| match line.strip_prefix('-') {
            Some(prefix) => route(format!("r{i}"), prefix, true),
            None => route(format!("r{i}"), line, false),
        })
        .collect();
    for path in paths.lines().take(32) {
        check_path(path);
    }
    let Ok(table) = RouteTable::compile(&configs, &GatewayConfig::default(), OWN_PREFIXES) else {
        return;
    };
    for path in paths.lines().take(32) {
        let best = configs
            .iter()
            .filter(|c| matches(&c.path_prefix, path).is_some())
            .map(|c| rank(&c.path_prefix))
            .max();
        let Some(m) = table.find(path) else {
            assert_eq!(best, None, "{path:?}: a route matches, none was found");
            continue;
        };
        let config = configs
            .iter()
            .find(|c| c.name == m.route.name)
            .expect("the route found is one of the table's");
        let owner = matches(&config.path_prefix, path).expect("the route found matches");
        assert_eq!(Some(rank(&config.path_prefix)), best, "{path:?}");
        assert_eq!(m.owner.as_deref(), owner, "{path:?}");
        if config.strip_prefix {
            let mut rest = segments(path)
                .split_off(segments(&config.path_prefix).len())
                .join("/");
            if path.ends_with('/') {
                rest.push('/');
            }
            assert_eq!(m.upstream_path, normalise(&rest), "{path:?}");
            if !has_dot_segments(path) {
                assert!(!has_dot_segments(&m.upstream_path), "{path:?}");
            }
        } else {
            assert_eq!(m.upstream_path, path);
        }
    }
});
