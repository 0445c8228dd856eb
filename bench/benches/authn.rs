//! Authentication of a request through the real identity service (SQLite
//! file, in-process state): an API key and a JWT from the verified-credential
//! cache, beside the uncached paths they replace (an Ed25519 verification;
//! an API-key look-up by hash in the database) in the same run.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use swarmgate_server::{App, Config};
use swarmgate_service::identity::NewApiKey;
use swarmgate_service::{Credential, Presented, RequestMeta};
use swarmgate_store::testing::fresh_sqlite_url;

const ADMIN_PASSWORD: &str = "Adm1n!Bench-Password";

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut config = Config::default();
    let url = fresh_sqlite_url();
    config.database.url = url.clone();
    config.security.login_rate_per_minute = 1_000_000;
    config.bootstrap.admin_password = Some(swarmgate_server::config::Secret(ADMIN_PASSWORD.into()));
    let settings = config.resolve().unwrap();
    let (identity, token, key, key_hash) = rt.block_on(async {
        let app = App::build(settings).await.unwrap();
        app.bootstrap().await.unwrap();
        let identity = app.services().identity.clone();
        let pair = identity
            .login("admin", ADMIN_PASSWORD.into(), &RequestMeta::default())
            .await
            .unwrap();
        let admin = identity.user_by_name("admin").await.unwrap();
        let session = Credential::Session {
            session_id: String::new(),
        };
        let admin = identity.principal_of(&admin, session);
        let created = identity
            .create_api_key_for(
                &admin,
                NewApiKey {
                    name: "bench".into(),
                    permissions: vec!["tasks.read".into()],
                    expires_in_days: None,
                    models: None,
                    limits: None,
                },
                &RequestMeta::default(),
            )
            .await
            .unwrap();
        (
            identity,
            pair.access_token,
            created.secret,
            created.key.key_hash,
        )
    });
    let store = rt.block_on(swarmgate_store::Store::connect(&url)).unwrap();
    let verifier = identity.keys().current();

    let mut group = c.benchmark_group("authenticate");
    group.bench_function("api_key_cached", |b| {
        b.iter(|| {
            rt.block_on(identity.authenticate(Presented::ApiKey(black_box(&key))))
                .unwrap()
        })
    });
    group.bench_function("baseline_api_key_lookup_by_hash_in_sqlite", |b| {
        b.iter(|| {
            rt.block_on(store.api_key_by_hash(black_box(&key_hash)))
                .unwrap()
                .unwrap()
        })
    });
    group.bench_function("jwt_cached", |b| {
        b.iter(|| {
            rt.block_on(identity.authenticate(Presented::Bearer(black_box(&token))))
                .unwrap()
        })
    });
    group.bench_function("baseline_jwt_ed25519_verify", |b| {
        b.iter(|| verifier.verify(black_box(&token)).unwrap())
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
