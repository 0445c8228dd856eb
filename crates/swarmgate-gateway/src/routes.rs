//! The route table: longest-prefix match by path segments, where a segment
//! `{owner}` matches any one segment and names the resource's owner.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use http::Method;
use swarmgate_core::permission::validate_permission;

use crate::config::{GatewayConfig, RouteConfig};
use crate::upstream::UpstreamPool;

/// Whether `path` is `prefix` or below it, for any of `prefixes` (the
/// server's own API: a route may not shadow it).
pub fn is_under(path: &str, prefixes: &[&str]) -> bool {
    prefixes.iter().any(|prefix| {
        path.strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    })
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Owner,
}

pub struct Route {
    pub name: String,
    /// `gateway:NAME`, the route label of its requests' metrics, made once.
    pub label: Arc<str>,
    segments: Vec<Segment>,
    pub upstreams: Arc<UpstreamPool>,
    permissions: HashMap<Method, String>,
    permission: Option<String>,
    pub strip_prefix: bool,
    pub timeout: Duration,
}

impl Route {
    /// The permission a method needs on this route, if the route serves it.
    /// The catch-all `permission` covers the standard methods only; any
    /// other method must be named in `permissions`.
    pub fn permission_for(&self, method: &Method) -> Option<&str> {
        let standard = [
            Method::GET,
            Method::HEAD,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
            Method::OPTIONS,
        ]
        .contains(method);
        self.permissions
            .get(method)
            .or(self.permission.as_ref().filter(|_| standard))
            .map(String::as_str)
    }
}

/// A path matched to a route.
pub struct RouteMatch<'a> {
    pub route: &'a Route,
    /// The `{owner}` segment, when the route has one.
    pub owner: Option<String>,
    /// The path to send upstream (the prefix removed when `strip_prefix`).
    pub upstream_path: String,
}

pub struct RouteTable {
    routes: Vec<Route>,
}

/// Whether a path has a `.` or `..` segment, literally or percent-encoded.
/// Such a path is refused: matched here as one owner's and normalised by
/// the upstream, `/memory/me/../you` would reach someone else's data.
pub fn has_dot_segments(path: &str) -> bool {
    // Encoded separators would let an upstream that decodes them see other
    // segments than the ones matched here.
    let encoded_separator = path.as_bytes().windows(3).any(|w| match w {
        [b'%', b'2', c] => c.eq_ignore_ascii_case(&b'f'),
        [b'%', b'5', c] => c.eq_ignore_ascii_case(&b'c'),
        _ => false,
    });
    encoded_separator || path.contains('\\') || path.split('/').any(is_dot_segment)
}

/// `.` or `..`, each dot written literally or as `%2e` (any case).
fn is_dot_segment(segment: &str) -> bool {
    let mut rest = segment.as_bytes();
    let mut dots = 0;
    while !rest.is_empty() {
        rest = match rest {
            [b'.', tail @ ..] => tail,
            [b'%', b'2', e, tail @ ..] if e.eq_ignore_ascii_case(&b'e') => tail,
            _ => return false,
        };
        dots += 1;
    }
    dots == 1 || dots == 2
}

impl std::fmt::Debug for RouteTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.routes.iter().map(|r| &r.name))
            .finish()
    }
}

fn segments(path: &str) -> impl Iterator<Item = &str> {
    path.split('/').filter(|s| !s.is_empty())
}

impl RouteTable {
    /// Validates and compiles the routes; the error names the route and
    /// what is wrong with it. `reserved` are the path prefixes the server
    /// answers itself, which no route may shadow.
    pub fn compile(
        routes: &[RouteConfig],
        gateway: &GatewayConfig,
        reserved: &[&str],
    ) -> Result<Self, String> {
        let mut compiled = Vec::with_capacity(routes.len());
        let mut names = std::collections::HashSet::new();
        for r in routes {
            let at = |msg: String| format!("routes.{}: {msg}", r.name);
            if r.name.is_empty() || !names.insert(r.name.clone()) {
                return Err(format!(
                    "routes: route names must be present and unique ({:?})",
                    r.name
                ));
            }
            if !r.path_prefix.starts_with('/') {
                return Err(at("path_prefix must start with /".into()));
            }
            if r.path_prefix == "/" || is_under(&r.path_prefix, reserved) {
                return Err(at(format!(
                    "path_prefix {:?} would shadow swarmgate's own API",
                    r.path_prefix
                )));
            }
            let segs: Vec<Segment> = segments(&r.path_prefix)
                .map(|s| {
                    if s == "{owner}" {
                        Segment::Owner
                    } else {
                        Segment::Literal(s.to_string())
                    }
                })
                .collect();
            if segs.iter().filter(|s| **s == Segment::Owner).count() > 1 {
                return Err(at("at most one {owner} segment".into()));
            }
            let upstreams =
                UpstreamPool::from_config(&r.upstreams, gateway, "http://HOST:PORT[/PATH]")
                    .map_err(at)?;
            let mut permissions = HashMap::new();
            for (method, permission) in &r.permissions {
                let m: Method = method
                    .to_uppercase()
                    .parse()
                    .map_err(|_| at(format!("{method:?} is not an HTTP method")))?;
                validate_permission(permission).map_err(|e| at(e.0))?;
                permissions.insert(m, permission.clone());
            }
            if let Some(p) = &r.permission {
                validate_permission(p).map_err(|e| at(e.0))?;
            }
            if permissions.is_empty() && r.permission.is_none() {
                return Err(at(
                    "needs `permissions` per method or one `permission`".into()
                ));
            }
            if r.timeout_ms == 0 {
                return Err(at("timeout_ms must be at least 1".into()));
            }
            compiled.push(Route {
                name: r.name.clone(),
                label: format!("gateway:{}", r.name).into(),
                segments: segs,
                upstreams: Arc::new(upstreams),
                permissions,
                permission: r.permission.clone(),
                strip_prefix: r.strip_prefix,
                timeout: Duration::from_millis(r.timeout_ms),
            });
        }
        // Longest first: more segments, then more literal segments.
        compiled.sort_by_key(|r| {
            let literals = r
                .segments
                .iter()
                .filter(|s| matches!(s, Segment::Literal(_)))
                .count();
            std::cmp::Reverse((r.segments.len(), literals))
        });
        Ok(Self { routes: compiled })
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// The route with the longest prefix that matches `path`.
    pub fn find(&self, path: &str) -> Option<RouteMatch<'_>> {
        let parts: Vec<&str> = segments(path).collect();
        'routes: for route in &self.routes {
            if parts.len() < route.segments.len() {
                continue;
            }
            let mut owner = None;
            for (segment, part) in route.segments.iter().zip(&parts) {
                match segment {
                    Segment::Literal(l) if l == part => {}
                    Segment::Owner => owner = Some((*part).to_string()),
                    Segment::Literal(_) => continue 'routes,
                }
            }
            let upstream_path = if route.strip_prefix {
                let rest = parts
                    .get(route.segments.len()..)
                    .unwrap_or_default()
                    .join("/");
                let trailing = if path.ends_with('/') && !rest.is_empty() {
                    "/"
                } else {
                    ""
                };
                format!("/{rest}{trailing}")
            } else {
                path.to_string()
            };
            return Some(RouteMatch {
                route,
                owner,
                upstream_path,
            });
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(name: &str, prefix: &str, strip: bool) -> RouteConfig {
        RouteConfig {
            name: name.into(),
            path_prefix: prefix.into(),
            upstreams: vec!["http://127.0.0.1:1".into()],
            permissions: Default::default(),
            permission: Some("x.read".into()),
            strip_prefix: strip,
            timeout_ms: 1000,
        }
    }

    /// Some of the server's own prefixes, as the server passes them.
    const OWN: &[&str] = &["/auth", "/quota", "/agents", "/metrics"];

    #[test]
    fn longest_prefix_wins_and_owner_is_captured() {
        let table = RouteTable::compile(
            &[
                route("tasks", "/tasks", false),
                route("tasks-admin", "/tasks/admin", true),
                route("memory", "/memory/{owner}", false),
                route("memory-shared", "/memory/shared", false),
            ],
            &GatewayConfig::default(),
            OWN,
        )
        .unwrap();
        let m = table.find("/tasks/7").unwrap();
        assert_eq!(m.route.name, "tasks");
        assert_eq!(m.upstream_path, "/tasks/7");
        let m = table.find("/tasks/admin/reset").unwrap();
        assert_eq!(m.route.name, "tasks-admin");
        assert_eq!(m.upstream_path, "/reset");
        let m = table.find("/memory/u1/notes").unwrap();
        assert_eq!(m.route.name, "memory");
        assert_eq!(m.owner.as_deref(), Some("u1"));
        assert_eq!(
            table.find("/memory/shared/x").unwrap().route.name,
            "memory-shared"
        );
        assert!(
            table.find("/memory").is_none(),
            "the owner segment is required"
        );
        assert!(
            table.find("/tasksx").is_none(),
            "segments, not string prefixes"
        );
        assert!(table.find("/other").is_none());
    }

    #[test]
    fn dot_segments_are_recognised_in_every_spelling() {
        for bad in [
            "/a/../b",
            "/a/./b",
            "/a/%2e%2e/b",
            "/a/%2E./b",
            "/..",
            "/a/.%2e",
        ] {
            assert!(has_dot_segments(bad), "{bad}");
        }
        for ok in ["/a/b", "/a/..b/c", "/a/b.c", "/a/...", "/"] {
            assert!(!has_dot_segments(ok), "{ok}");
        }
    }

    #[test]
    fn bad_routes_are_refused_naming_them() {
        let g = GatewayConfig::default();
        for (r, needle) in [
            (route("a", "tasks", false), "start with /"),
            (route("b", "/auth/x", false), "shadow"),
            (route("b2", "/quota", false), "shadow"),
            (route("b3", "/agents/x", false), "shadow"),
            (route("b4", "/metrics", false), "shadow"),
            (route("c", "/", false), "shadow"),
            (
                RouteConfig {
                    upstreams: vec![],
                    ..route("d", "/d", false)
                },
                "upstream",
            ),
            (
                RouteConfig {
                    upstreams: vec!["ftp://x".into()],
                    ..route("e", "/e", false)
                },
                "http://",
            ),
            (
                RouteConfig {
                    permission: None,
                    ..route("f", "/f", false)
                },
                "permission",
            ),
            (
                RouteConfig {
                    permission: Some("Bad.Perm".into()),
                    ..route("g", "/g", false)
                },
                "g",
            ),
        ] {
            let e = RouteTable::compile(&[r], &g, OWN).err().unwrap();
            assert!(e.contains(needle), "{e}");
        }
        let e = RouteTable::compile(&[route("x", "/x", false), route("x", "/y", false)], &g, OWN)
            .err()
            .unwrap();
        assert!(e.contains("unique"));
    }
}
