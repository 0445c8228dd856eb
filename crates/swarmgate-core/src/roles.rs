//! Roles: the built-in ones (seed 001 wins over seed 000 for `user`) and
//! those an operator adds or redefines in the configuration, each compiled
//! once into a [`GrantSet`].

use std::collections::BTreeMap;
use std::sync::Arc;

use rustc_hash::FxHashMap;

use crate::permission::{GrantSet, PermissionError};

pub const ADMIN: &str = "admin";
pub const USER: &str = "user";
/// The role of node tokens (seed 004): what a worker node of the swarm does.
pub const NODE_ROLE: &str = "node";

/// `(role, grants)` for every built-in role.
pub const BUILT_IN: &[(&str, &[&str])] = &[
    (ADMIN, &["*"]),
    (
        "ml-engineer",
        &[
            "models.*",
            "inference.*",
            "training.*",
            "orchestrator.tasks.*",
            "memory.write",
        ],
    ),
    (
        "developer",
        &[
            "orchestrator.*",
            "agents.*",
            "memory.*",
            "tasks.create",
            "tasks.read",
            "tasks.update",
        ],
    ),
    (
        "analyst",
        &[
            "tasks.read",
            "memory.read",
            "stats.read",
            "metrics.*",
            "observability.*",
        ],
    ),
    (
        USER,
        &[
            "tasks.create",
            "tasks.read",
            "tasks.update",
            "tasks.delete",
            "memory.read",
            "memory.write",
            "agents.query",
            "stats.read",
        ],
    ),
    ("viewer", &["tasks.read", "memory.read"]),
    (
        NODE_ROLE,
        &["nodes.register", "metrics.report", "nodes.heartbeat"],
    ),
];

/// One role with its grants as written and compiled.
#[derive(Debug, Clone)]
pub struct Role {
    pub name: String,
    pub permissions: Vec<String>,
    pub grants: GrantSet,
}

/// The role table of a running configuration.
#[derive(Debug, Clone)]
pub struct Roles {
    by_name: FxHashMap<String, Arc<Role>>,
}

fn valid_role_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

impl Roles {
    pub fn built_in() -> Self {
        Self::with_overrides(&BTreeMap::new())
            .unwrap_or_else(|_| unreachable!("built-in grants are valid"))
    }

    /// The built-in roles with `overrides` added or replacing them. The
    /// error names the role and the first invalid grant.
    pub fn with_overrides(
        overrides: &BTreeMap<String, Vec<String>>,
    ) -> Result<Self, PermissionError> {
        let mut by_name = FxHashMap::default();
        let mut add = |name: &str, permissions: Vec<String>| -> Result<(), PermissionError> {
            if !valid_role_name(name) {
                return Err(PermissionError(format!(
                    "roles.{name}: a role name is 1 to 64 of [a-z0-9_-]"
                )));
            }
            let grants = GrantSet::parse(&permissions)
                .map_err(|e| PermissionError(format!("roles.{name}.permissions: {e}")))?;
            by_name.insert(
                name.to_string(),
                Arc::new(Role {
                    name: name.to_string(),
                    permissions,
                    grants,
                }),
            );
            Ok(())
        };
        for (name, grants) in BUILT_IN {
            if !overrides.contains_key(*name) {
                add(name, grants.iter().map(|g| g.to_string()).collect())?;
            }
        }
        for (name, grants) in overrides {
            add(name, grants.clone())?;
        }
        Ok(Self { by_name })
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Role>> {
        self.by_name.get(name)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    /// Every role, by name.
    pub fn sorted(&self) -> Vec<&Arc<Role>> {
        let mut roles: Vec<_> = self.by_name.values().collect();
        roles.sort_by(|a, b| a.name.cmp(&b.name));
        roles
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every role against every permission named in the seeds' tables
    /// (001's permission table and 000's role matrix).
    #[test]
    fn built_in_roles_against_the_seed_permissions() {
        let roles = Roles::built_in();
        let permissions = [
            "tasks.create",
            "tasks.read",
            "tasks.update",
            "tasks.delete",
            "memory.read",
            "memory.write",
            "agents.query",
            "stats.read",
            "models.load",
            "models.unload",
            "inference.run",
            "training.start",
            "orchestrator.tasks.create",
            "orchestrator.agents.spawn",
            "agents.spawn",
            "metrics.read",
            "observability.traces",
            "users.manage",
            "audit.read",
            "nodes.manage",
        ];
        let expect = |role: &str, allowed: &[&str]| {
            let r = roles.get(role).unwrap();
            for p in permissions {
                let want = allowed.contains(&"*") || allowed.contains(&p);
                assert_eq!(r.grants.allows(p, None, "u"), want, "{role} {p}");
            }
        };
        expect("admin", &["*"]);
        expect(
            "ml-engineer",
            &[
                "models.load",
                "models.unload",
                "inference.run",
                "training.start",
                "orchestrator.tasks.create",
                "memory.write",
            ],
        );
        expect(
            "developer",
            &[
                "orchestrator.tasks.create",
                "orchestrator.agents.spawn",
                "agents.query",
                "agents.spawn",
                "memory.read",
                "memory.write",
                "tasks.create",
                "tasks.read",
                "tasks.update",
            ],
        );
        expect(
            "analyst",
            &[
                "tasks.read",
                "memory.read",
                "stats.read",
                "metrics.read",
                "observability.traces",
            ],
        );
        expect(
            "user",
            &[
                "tasks.create",
                "tasks.read",
                "tasks.update",
                "tasks.delete",
                "memory.read",
                "memory.write",
                "agents.query",
                "stats.read",
            ],
        );
        expect("viewer", &["tasks.read", "memory.read"]);
    }

    #[test]
    fn overrides_add_and_replace_roles_and_name_bad_grants() {
        let mut overrides = BTreeMap::new();
        overrides.insert(
            "auditor".to_string(),
            vec!["audit.read".to_string(), "memory.read:own".to_string()],
        );
        overrides.insert("viewer".to_string(), vec!["stats.read".to_string()]);
        let roles = Roles::with_overrides(&overrides).unwrap();
        assert!(roles
            .get("auditor")
            .unwrap()
            .grants
            .allows("audit.read", None, "u"));
        assert!(roles
            .get("auditor")
            .unwrap()
            .grants
            .allows("memory.read", Some("memory:u"), "u"));
        assert!(!roles
            .get("viewer")
            .unwrap()
            .grants
            .allows("tasks.read", None, "u"));
        assert!(roles
            .get("viewer")
            .unwrap()
            .grants
            .allows("stats.read", None, "u"));
        assert_eq!(
            roles.sorted().len(),
            8,
            "the seven built-in roles and auditor"
        );

        overrides.insert("broken".to_string(), vec!["Tasks.*.read".to_string()]);
        let e = Roles::with_overrides(&overrides).unwrap_err().0;
        assert!(
            e.contains("roles.broken") && e.contains("Tasks.*.read"),
            "{e}"
        );
        let mut bad_name = BTreeMap::new();
        bad_name.insert("Bad Name".to_string(), vec![]);
        assert!(Roles::with_overrides(&bad_name).is_err());
    }
}
