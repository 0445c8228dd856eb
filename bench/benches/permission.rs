//! The in-process permission check, with the user's role looked up first,
//! beside a straightforward pattern-list matcher (the baseline) in the same
//! run. One core: criterion runs the closure on one thread.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rustc_hash::FxHashMap;
use swarmgate_core::roles::{Role, Roles, BUILT_IN};

/// The obvious matcher: scan the role's grant strings, compare each as a
/// pattern. What a first implementation (and many gateways) does.
fn pattern_list_allows(grants: &[String], permission: &str) -> bool {
    grants.iter().any(|g| {
        let (pattern, own) = match g.strip_suffix(":own") {
            Some(p) => (p, true),
            None => (g.as_str(), false),
        };
        if own {
            return false;
        }
        if pattern == "*" {
            return true;
        }
        match pattern.strip_suffix(".*") {
            Some(prefix) => {
                permission.len() > prefix.len() + 1
                    && permission.starts_with(prefix)
                    && permission.as_bytes()[prefix.len()] == b'.'
            }
            None => pattern == permission,
        }
    })
}

/// (user id, permission) pairs over every built-in role, allowed and denied.
fn workload() -> Vec<(String, &'static str)> {
    let permissions = [
        "tasks.read",
        "tasks.delete",
        "memory.write",
        "models.load",
        "orchestrator.tasks.create",
        "metrics.read",
        "agents.spawn",
        "stats.read",
        "training.start",
        "users.manage",
    ];
    let mut pairs = Vec::new();
    for (i, (_, _)) in BUILT_IN.iter().enumerate() {
        for p in permissions {
            pairs.push((format!("user-{i}"), p));
        }
    }
    pairs
}

fn bench(c: &mut Criterion) {
    let roles = Roles::built_in();
    // The user look-up: user id -> current role, as the server's user
    // cache holds it.
    let mut users: FxHashMap<String, Arc<Role>> = FxHashMap::default();
    let mut users_raw: FxHashMap<String, Vec<String>> = FxHashMap::default();
    for (i, (name, _)) in BUILT_IN.iter().enumerate() {
        let role = roles.get(name).unwrap().clone();
        users_raw.insert(format!("user-{i}"), role.permissions.clone());
        users.insert(format!("user-{i}"), role);
    }
    let work = workload();
    let mut group = c.benchmark_group("permission_check");
    group.throughput(Throughput::Elements(work.len() as u64));
    group.bench_function("compiled_grant_set_with_user_lookup", |b| {
        b.iter(|| {
            let mut allowed = 0u32;
            for (user, permission) in &work {
                let role = users.get(black_box(user.as_str())).unwrap();
                allowed += u32::from(role.grants.allows(black_box(permission), None, user));
            }
            black_box(allowed)
        })
    });
    group.bench_function("baseline_pattern_list_with_user_lookup", |b| {
        b.iter(|| {
            let mut allowed = 0u32;
            for (user, permission) in &work {
                let grants = users_raw.get(black_box(user.as_str())).unwrap();
                allowed += u32::from(pattern_list_allows(grants, black_box(permission)));
            }
            black_box(allowed)
        })
    });
    group.finish();

    // A large configured role (200 grants, as an operator's fine-grained
    // role might have): the compiled check stays flat, the scan does not.
    let mut many: Vec<String> = (0..100).map(|i| format!("service{i}.read")).collect();
    many.extend((0..100).map(|i| format!("service{i}.admin.*")));
    let big = swarmgate_core::permission::GrantSet::parse(&many).unwrap();
    let probes = [
        "service99.read",
        "service50.admin.reset",
        "service7.write",
        "other.thing",
    ];
    let mut group = c.benchmark_group("permission_check_200_grants");
    group.throughput(Throughput::Elements(probes.len() as u64));
    group.bench_function("compiled_grant_set", |b| {
        b.iter(|| {
            probes
                .iter()
                .filter(|p| big.allows(black_box(p), None, "u"))
                .count()
        })
    });
    group.bench_function("baseline_pattern_list", |b| {
        b.iter(|| {
            probes
                .iter()
                .filter(|p| pattern_list_allows(&many, black_box(p)))
                .count()
        })
    });
    group.finish();
    for p in probes {
        assert_eq!(
            big.allows(p, None, "u"),
            pattern_list_allows(&many, p),
            "{p}"
        );
    }

    // Sanity: both matchers agree on the workload.
    for (user, permission) in &work {
        assert_eq!(
            users[user].grants.allows(permission, None, user),
            pattern_list_allows(&users_raw[user], permission),
            "{user} {permission}"
        );
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
