//! The built-in roles and their grants (seed 001 wins over seed 000 for
//! `user`). The permission engine that evaluates wildcards and `:own` scopes
//! is a separate piece; this module only names what each role is granted.

pub const ADMIN: &str = "admin";
pub const USER: &str = "user";

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
];

/// Grants of a built-in role, or `None` for a name that is not built in.
pub fn built_in_grants(role: &str) -> Option<&'static [&'static str]> {
    BUILT_IN
        .iter()
        .find(|(name, _)| *name == role)
        .map(|(_, grants)| *grants)
}
