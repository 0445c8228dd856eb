//! The permission grammar and the compiled grant set.
//!
//! Input: lines of text; the first is a permission to check, the others
//! grants.
//!
//! Properties: a grant that parses prints back to exactly its text (so it
//! re-parses to the same value); a valid permission parses as the exact
//! grant of itself and never as a wildcard; the compiled set answers as a
//! scan of every grant does; `covers` is sound (a covered grant allows
//! nothing the set does not); `allows` honours `:own` by `owned_by`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use swarmgate_core::permission::{
    owned_by, validate_permission, Access, Grant, GrantSet, Pattern, MAX_LEN,
};

/// The obvious matcher: scan every grant.
fn reference(grants: &[Grant], permission: &str) -> Access {
    let mut best = Access::None;
    for g in grants {
        let hit = match &g.pattern {
            Pattern::All => true,
            Pattern::Exact(p) => p == permission,
            Pattern::Prefix(p) => permission
                .strip_prefix(p.as_str())
                .and_then(|rest| rest.strip_prefix('.'))
                .is_some_and(|rest| !rest.is_empty()),
        };
        if hit {
            best = best.max(if g.own { Access::Own } else { Access::Any });
        }
    }
    best
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = text.split('\n');
    let permission = lines.next().unwrap_or_default();
    let mut grants = Vec::new();
    for line in lines.take(64) {
        if let Ok(grant) = Grant::parse(line) {
            assert_eq!(grant.to_string(), line);
            assert_eq!(Grant::parse(&grant.to_string()), Ok(grant.clone()));
            grants.push(grant);
        }
    }
    let valid = validate_permission(permission).is_ok();
    if valid {
        assert!(permission.len() <= MAX_LEN);
        assert_eq!(
            Grant::parse(permission),
            Ok(Grant {
                pattern: Pattern::Exact(permission.to_string()),
                own: false,
            })
        );
    }
    let set = GrantSet::compile(&grants);
    assert_eq!(set.grants(), &grants[..]);
    // Only a well-formed permission is ever checked (see `access`).
    if !valid {
        return;
    }
    let access = set.access(permission);
    assert_eq!(
        access,
        reference(&grants, permission),
        "{grants:?} {permission}"
    );
    for g in &grants {
        if set.covers(g) {
            assert!(
                access >= reference(std::slice::from_ref(g), permission),
                "{g}"
            );
        }
    }
    // The resource is the last grant line, the caller the part after its `:`.
    let resource = text.rsplit('\n').next().unwrap_or_default();
    let caller = resource.split_once(':').map_or("", |(_, c)| c);
    let caller = caller.split('/').next().unwrap_or_default();
    let expected = match access {
        Access::Any => true,
        Access::Own => owned_by(resource, caller),
        Access::None => false,
    };
    assert_eq!(set.allows(permission, Some(resource), caller), expected);
    if owned_by(resource, caller) {
        assert!(!caller.is_empty() && resource.contains(caller));
    }
});
