//! The permission grammar and the compiled check.
//!
//! A permission is dot-separated segments of `[a-z0-9_-]` (`tasks.read`).
//! A grant is a permission, a permission prefix ending in the segment `*`
//! (`models.*` covers `models.load` and `models.a.b`, not `models`), or `*`
//! alone; any of them may carry `:own`, which allows it only on resources
//! written `TYPE:CALLER_ID` or `TYPE:CALLER_ID/ANYTHING`.
//!
//! [`GrantSet`] compiles a list of grants into one hash map keyed by name,
//! so a check hashes the permission (and only those of its prefixes at
//! which some wildcard exists), allocates nothing and never scans the grant
//! list.

use std::fmt;

use rustc_hash::FxHashMap;

/// Longest permission or grant accepted, in bytes.
pub const MAX_LEN: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PermissionError(pub String);

fn valid_segment(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// Checks that `text` is a permission (no wildcard, no scope).
pub fn validate_permission(text: &str) -> Result<(), PermissionError> {
    if text.is_empty() || text.len() > MAX_LEN {
        return Err(PermissionError(format!(
            "permission must be 1 to {MAX_LEN} characters"
        )));
    }
    if !text.split('.').all(valid_segment) {
        return Err(PermissionError(format!(
            "{text:?} is not a permission: dot-separated segments of [a-z0-9_-]"
        )));
    }
    Ok(())
}

/// What a grant names.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Pattern {
    /// `*`
    All,
    /// `a.b`
    Exact(String),
    /// `a.b.*`, stored without the `.*`
    Prefix(String),
}

/// One parsed grant.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Grant {
    pub pattern: Pattern,
    /// `:own`: only on the caller's own resources.
    pub own: bool,
}

impl Grant {
    pub fn parse(text: &str) -> Result<Self, PermissionError> {
        if text.is_empty() || text.len() > MAX_LEN {
            return Err(PermissionError(format!(
                "grant must be 1 to {MAX_LEN} characters"
            )));
        }
        let (body, own) = match text.split_once(':') {
            Some((body, "own")) => (body, true),
            Some((_, scope)) => {
                return Err(PermissionError(format!(
                    "{text:?}: unknown scope {scope:?} (only :own exists)"
                )))
            }
            None => (text, false),
        };
        let pattern = if body == "*" {
            Pattern::All
        } else if let Some(prefix) = body.strip_suffix(".*") {
            validate_permission(prefix)
                .map_err(|_| PermissionError(format!("{text:?} is not a valid grant")))?;
            Pattern::Prefix(prefix.to_string())
        } else {
            validate_permission(body)
                .map_err(|_| PermissionError(format!("{text:?} is not a valid grant")))?;
            Pattern::Exact(body.to_string())
        };
        Ok(Grant { pattern, own })
    }
}

impl fmt::Display for Grant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.pattern {
            Pattern::All => f.write_str("*")?,
            Pattern::Exact(p) => f.write_str(p)?,
            Pattern::Prefix(p) => write!(f, "{p}.*")?,
        }
        if self.own {
            f.write_str(":own")?;
        }
        Ok(())
    }
}

/// How far a grant set allows a permission.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Access {
    None,
    /// Only on the caller's own resources.
    Own,
    Any,
}

const ANY: u8 = 0b01;
const OWN: u8 = 0b10;

fn access(flags: u8) -> Access {
    if flags & ANY != 0 {
        Access::Any
    } else if flags & OWN != 0 {
        Access::Own
    } else {
        Access::None
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct Entry {
    /// Grants naming exactly this permission.
    exact: u8,
    /// Grants `this.*`, covering strictly longer names.
    wildcard: u8,
}

/// A compiled list of grants: one hash map from a name (a permission, or
/// the prefix of a wildcard) to the scopes granted on it, plus a bit mask
/// of the depths (segment counts) at which wildcard prefixes exist, so a
/// check looks up only the prefixes that could match: usually one or two
/// look-ups, whatever the number of grants.
#[derive(Debug, Default, Clone)]
pub struct GrantSet {
    /// `*` (and `*:own`).
    root: u8,
    entries: FxHashMap<Box<str>, Entry>,
    /// Bit `d` set: some wildcard prefix has `d` segments. A name of at
    /// most MAX_LEN (256) bytes has at most 128 segments, so 128 bits hold
    /// every depth that can match.
    wildcard_depths: u128,
    grants: Vec<Grant>,
}

impl GrantSet {
    pub fn compile(grants: &[Grant]) -> Self {
        let mut set = GrantSet {
            grants: grants.to_vec(),
            ..GrantSet::default()
        };
        for grant in grants {
            let flag = if grant.own { OWN } else { ANY };
            match &grant.pattern {
                Pattern::All => set.root |= flag,
                Pattern::Exact(p) => {
                    set.entries.entry(p.as_str().into()).or_default().exact |= flag
                }
                Pattern::Prefix(p) => {
                    set.entries.entry(p.as_str().into()).or_default().wildcard |= flag;
                    let depth = p.split('.').count();
                    if depth < 128 {
                        set.wildcard_depths |= 1 << depth;
                    }
                }
            }
        }
        set
    }

    /// Parses and compiles; the error names the first invalid grant.
    pub fn parse<S: AsRef<str>>(grants: &[S]) -> Result<Self, PermissionError> {
        let parsed = grants
            .iter()
            .map(|g| Grant::parse(g.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self::compile(&parsed))
    }

    pub fn grants(&self) -> &[Grant] {
        &self.grants
    }

    /// Wildcard flags of every proper prefix of `name` (and of `name`
    /// itself when `inclusive`), at the depths where wildcards exist.
    #[inline]
    fn wildcard_flags(&self, name: &str, inclusive: bool) -> u8 {
        let mut flags = self.root;
        if self.wildcard_depths == 0 || flags & ANY != 0 {
            return flags;
        }
        let mut depth = 0u32;
        for (i, byte) in name.bytes().enumerate() {
            if byte == b'.' {
                depth += 1;
                if depth < 128 && self.wildcard_depths & (1 << depth) != 0 {
                    if let Some(entry) = self.entries.get(&name[..i]) {
                        flags |= entry.wildcard;
                        if flags & ANY != 0 {
                            return flags;
                        }
                    }
                }
            }
        }
        if inclusive {
            depth += 1;
            if depth < 128 && self.wildcard_depths & (1 << depth) != 0 {
                if let Some(entry) = self.entries.get(name) {
                    flags |= entry.wildcard;
                }
            }
        }
        flags
    }

    /// How far `permission` is allowed. The check assumes a well-formed
    /// permission (it does not re-validate on the hot path): input from a
    /// client must pass [`validate_permission`] first, as the check endpoint
    /// does, or `models.` could match `models.*`.
    pub fn access(&self, permission: &str) -> Access {
        let flags = self.wildcard_flags(permission, false);
        if flags & ANY != 0 {
            return Access::Any;
        }
        let exact = self.entries.get(permission).map_or(0, |e| e.exact);
        access(flags | exact)
    }

    /// The full check: `:own` grants count only when `resource` belongs to
    /// `caller_id`.
    pub fn allows(&self, permission: &str, resource: Option<&str>, caller_id: &str) -> bool {
        match self.access(permission) {
            Access::Any => true,
            Access::Own => resource.is_some_and(|r| owned_by(r, caller_id)),
            Access::None => false,
        }
    }

    /// Whether every permission `grant` could allow is also allowed here
    /// with at least the same scope (so a key asking for `grant` asks for no
    /// more than its creator holds).
    pub fn covers(&self, grant: &Grant) -> bool {
        let needed = if grant.own { Access::Own } else { Access::Any };
        let have = match &grant.pattern {
            Pattern::Exact(p) => self.access(p),
            Pattern::All => access(self.root),
            // Only wildcards on the path (or at its end) cover `p.*`.
            Pattern::Prefix(p) => access(self.wildcard_flags(p, true)),
        };
        have >= needed
    }
}

/// `TYPE:CALLER_ID` or `TYPE:CALLER_ID/ANYTHING`.
pub fn owned_by(resource: &str, caller_id: &str) -> bool {
    let Some((kind, rest)) = resource.split_once(':') else {
        return false;
    };
    !kind.is_empty()
        && !caller_id.is_empty()
        && rest
            .strip_prefix(caller_id)
            .is_some_and(|tail| tail.is_empty() || tail.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn set(grants: &[&str]) -> GrantSet {
        GrantSet::parse(grants).unwrap()
    }

    #[test]
    fn grammar() {
        for ok in [
            "tasks.read",
            "a",
            "a-b_c.d9",
            "models.*",
            "*",
            "memory.read:own",
            "*:own",
            "a.b.*:own",
        ] {
            assert!(Grant::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "Tasks.read",
            "tasks..read",
            ".tasks",
            "tasks.",
            "tasks.*.read",
            "*.tasks",
            "tasks*",
            "tasks.re*",
            "tasks.read:mine",
            "tasks.read:",
            ":own",
            "tasks read",
            "tâche.read",
            "**",
            "models.**",
        ] {
            assert!(Grant::parse(bad).is_err(), "{bad}");
        }
        assert!(Grant::parse(&"a".repeat(257)).is_err());
        for ok in ["tasks.read", "orchestrator.tasks.create", "x"] {
            assert!(validate_permission(ok).is_ok(), "{ok}");
        }
        for bad in ["", "*", "tasks.*", "a:own", "A", "a..b", "a.b."] {
            assert!(validate_permission(bad).is_err(), "{bad}");
        }
        assert_eq!(Grant::parse("a.b.*:own").unwrap().to_string(), "a.b.*:own");
    }

    #[test]
    fn matching_table() {
        let cases: &[(&[&str], &str, Access)] = &[
            (&["*"], "anything.at.all", Access::Any),
            (&["models.*"], "models.load", Access::Any),
            (&["models.*"], "models.a.b", Access::Any),
            (&["models.*"], "models", Access::None),
            (&["models.*"], "modelsx.load", Access::None),
            (&["models.load"], "models.load", Access::Any),
            (&["models.load"], "models.load.x", Access::None),
            (&["models.load"], "models", Access::None),
            (&["a.b.*"], "a.b.c.d", Access::Any),
            (&["a.b.*"], "a.c", Access::None),
            (&["memory.read:own"], "memory.read", Access::Own),
            (
                &["memory.read:own", "memory.read"],
                "memory.read",
                Access::Any,
            ),
            (&["memory.*:own"], "memory.write", Access::Own),
            (&["memory.*:own", "*"], "memory.write", Access::Any),
            (&["*:own"], "x.y", Access::Own),
            (&[], "tasks.read", Access::None),
            (&["tasks.read"], "", Access::None),
            (&["tasks.read"], "tasks..read", Access::None),
        ];
        for (grants, permission, expected) in cases {
            assert_eq!(
                set(grants).access(permission),
                *expected,
                "{grants:?} {permission}"
            );
        }
    }

    #[test]
    fn deep_wildcards_match_like_shallow_ones() {
        let segments: Vec<String> = (0..100)
            .map(|i| ((b'a' + (i % 26) as u8) as char).to_string())
            .collect();
        let prefix = segments[..80].join(".");
        let set = GrantSet::parse(&[format!("{prefix}.*")]).unwrap();
        let name = segments[..81].join(".");
        assert!(name.len() <= MAX_LEN);
        assert_eq!(set.access(&name), Access::Any);
        assert_eq!(set.access(&prefix), Access::None);
    }

    #[test]
    fn own_scope_needs_the_callers_resource() {
        let s = set(&["memory.read:own"]);
        assert!(s.allows("memory.read", Some("memory:u1"), "u1"));
        assert!(s.allows("memory.read", Some("memory:u1/notes/2"), "u1"));
        assert!(!s.allows("memory.read", Some("memory:u12"), "u1"));
        assert!(!s.allows("memory.read", Some("memory:u2"), "u1"));
        assert!(!s.allows("memory.read", Some(":u1"), "u1"));
        assert!(!s.allows("memory.read", Some("u1"), "u1"));
        assert!(!s.allows("memory.read", None, "u1"));
        assert!(!s.allows("memory.read", Some("memory:"), ""));
        assert!(set(&["memory.read"]).allows("memory.read", None, "u1"));
    }

    #[test]
    fn covers_table() {
        let holder = set(&["models.*", "tasks.read", "memory.read:own", "a.b.*:own"]);
        for (grant, expected) in [
            ("models.load", true),
            ("models.*", true),
            ("models.a.*", true),
            ("models.load:own", true),
            ("tasks.read", true),
            ("tasks.read:own", true),
            ("tasks.*", false),
            ("tasks.write", false),
            ("memory.read", false),
            ("memory.read:own", true),
            ("a.b.c:own", true),
            ("a.b.*:own", true),
            ("a.b.*", false),
            ("*", false),
            ("*:own", false),
        ] {
            assert_eq!(
                holder.covers(&Grant::parse(grant).unwrap()),
                expected,
                "{grant}"
            );
        }
        let admin = set(&["*"]);
        for grant in ["*", "*:own", "x.*", "x.y:own"] {
            assert!(admin.covers(&Grant::parse(grant).unwrap()), "{grant}");
        }
    }

    /// The obvious matcher: scan every grant.
    fn reference(grants: &[Grant], permission: &str) -> Access {
        let mut best = Access::None;
        for g in grants {
            let hit = match &g.pattern {
                Pattern::All => true,
                Pattern::Exact(p) => p == permission,
                Pattern::Prefix(p) => {
                    permission.len() > p.len() + 1
                        && permission.starts_with(p.as_str())
                        && permission.as_bytes()[p.len()] == b'.'
                }
            };
            if hit {
                best = best.max(if g.own { Access::Own } else { Access::Any });
            }
        }
        best
    }

    fn segment() -> impl Strategy<Value = String> {
        prop::sample::select(vec!["a", "b", "c", "models", "read", "x-y", "z_1"])
            .prop_map(String::from)
    }

    fn permission() -> impl Strategy<Value = String> {
        prop::collection::vec(segment(), 1..9).prop_map(|s| s.join("."))
    }

    fn grant() -> impl Strategy<Value = Grant> {
        (
            prop::collection::vec(segment(), 0..4),
            0..3u8,
            any::<bool>(),
        )
            .prop_map(|(segs, kind, own)| {
                let pattern = if segs.is_empty() {
                    Pattern::All
                } else if kind == 0 {
                    Pattern::Prefix(segs.join("."))
                } else {
                    Pattern::Exact(segs.join("."))
                };
                Grant { pattern, own }
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn compiled_check_agrees_with_the_reference(grants in prop::collection::vec(grant(), 0..8), p in permission()) {
            let compiled = GrantSet::compile(&grants);
            prop_assert_eq!(compiled.access(&p), reference(&grants, &p));
        }

        #[test]
        fn allows_honours_own_scope(grants in prop::collection::vec(grant(), 0..8), p in permission(), mine in any::<bool>()) {
            let compiled = GrantSet::compile(&grants);
            let resource = if mine { "memory:u1/x" } else { "memory:u2" };
            let expected = match reference(&grants, &p) {
                Access::Any => true,
                Access::Own => mine,
                Access::None => false,
            };
            prop_assert_eq!(compiled.allows(&p, Some(resource), "u1"), expected);
        }

        #[test]
        fn covers_is_sound(holder in prop::collection::vec(grant(), 0..6), g in grant(), p in permission()) {
            // If the holder covers g, then every permission g allows the
            // holder allows with at least the same scope.
            let compiled = GrantSet::compile(&holder);
            if compiled.covers(&g) {
                prop_assert!(compiled.access(&p) >= reference(std::slice::from_ref(&g), &p));
            }
        }

        #[test]
        fn grant_display_round_trips(g in grant()) {
            prop_assert_eq!(Grant::parse(&g.to_string()).unwrap(), g);
        }
    }
}
