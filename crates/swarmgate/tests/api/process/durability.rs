//! SIGKILL in the middle of a storm of writes, then a restart on the same
//! database: every write the API acknowledged (a 2xx the client received
//! before the kill) is there, and none is half-written. Usage is batched,
//! so what a kill may lose is bounded instead: the calls that finished in
//! the last flush interval.

use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

use reqwest::{Client, StatusCode};
use serde_json::{json, Value};
use swarmgate_store::testing::{fresh_postgres_database, test_database_url};

use crate::common::*;

const MODEL: &str = "storm-model";
const FLUSH_MS: u64 = 200;
/// Beyond the flush interval: the batch's own write, which waits behind the
/// storm's writes (SQLite logs statements waiting over 1 s for its lock on
/// this 2-core machine), and a loaded machine running the flusher late.
const MARGIN: Duration = Duration::from_millis(2500);
/// Long enough that plenty of calls finish more than a flush interval and
/// the margin before the kill.
const STORM: Duration = Duration::from_secs(5);

#[tokio::test]
async fn sigkill_loses_no_acknowledged_write_on_sqlite() {
    storm(None).await;
}

#[tokio::test]
async fn sigkill_loses_no_acknowledged_write_on_postgres() {
    let Some(admin) = test_database_url() else {
        eprintln!("TEST_DATABASE_URL unset: the PostgreSQL durability test not run");
        return;
    };
    storm(Some(fresh_postgres_database(&admin).await.unwrap())).await;
}

async fn storm(database: Option<String>) {
    let mock = crate::mock::Mock::start(&["--models", MODEL]).await;
    let config = config_file(&format!(
        "[[models]]\nname = \"{MODEL}\"\nupstreams = [\"{}\"]\n",
        mock.base
    ));
    let mut env = vec![
        ("SWARMGATE_CONFIG", config.display().to_string()),
        ("SWARMGATE_USAGE__FLUSH_INTERVAL_MS", FLUSH_MS.to_string()),
        ("SWARMGATE_SERVER__WORKER_THREADS", "2".to_string()),
    ];
    if let Some(url) = &database {
        env.push(("DATABASE_URL", url.clone()));
    }
    let mut first = Process::serve(&env).await;
    if database.is_none() {
        env.push(("DATABASE_URL", first.database_url()));
    }
    // A request cut off by the kill fails at once; the timeout only keeps a
    // wedged server from hanging the test.
    let client = Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let base = first.base.clone();
    let admin = access(&login(&client, &base, "admin", ADMIN_PASSWORD).await);
    let (chat_key_id, chat_key) =
        create_key(&client, &base, &admin, &[&format!("models.{MODEL}.invoke")])
            .await
            .unwrap();
    let mut targets = Vec::new();
    for i in 0..2 {
        let name = format!("target{i}");
        targets.push(register(&client, &base, &name).await.unwrap());
    }
    let disabled_id = register(&client, &base, "disabled").await.unwrap();
    let disabled_session = login(&client, &base, "disabled", PASSWORD).await;
    let disabled_key = create_key(&client, &base, &access(&disabled_session), &["tasks.read"])
        .await
        .unwrap();
    let mut chains = Vec::new();
    for _ in 0..3 {
        chains.push(refresh_of(
            &login(&client, &base, "admin", ADMIN_PASSWORD).await,
        ));
    }

    let started = Instant::now();
    let registrations: Vec<_> = (0..2)
        .map(|w| tokio::spawn(register_worker(client.clone(), base.clone(), w)))
        .collect();
    let keys: Vec<_> = (0..2)
        .map(|_| tokio::spawn(key_worker(client.clone(), base.clone(), admin.clone())))
        .collect();
    let rotations: Vec<_> = chains
        .into_iter()
        .map(|token| tokio::spawn(refresh_worker(client.clone(), base.clone(), token)))
        .collect();
    let logouts = tokio::spawn(logout_worker(client.clone(), base.clone()));
    let patches: Vec<_> = targets
        .iter()
        .map(|id| {
            tokio::spawn(patch_worker(
                client.clone(),
                base.clone(),
                admin.clone(),
                id.clone(),
            ))
        })
        .collect();
    let chats: Vec<_> = (0..4)
        .map(|w| {
            tokio::spawn(chat_worker(
                client.clone(),
                base.clone(),
                chat_key.clone(),
                w % 2 == 1,
            ))
        })
        .collect();
    let disable = {
        let (client, base, admin, id) = (
            client.clone(),
            base.clone(),
            admin.clone(),
            disabled_id.clone(),
        );
        tokio::spawn(async move {
            tokio::time::sleep(STORM / 2).await;
            let r = client
                .patch(format!("{base}/admin/users/{id}"))
                .bearer_auth(&admin)
                .json(&json!({"disabled": true}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::OK);
        })
    };

    tokio::time::sleep(STORM.saturating_sub(started.elapsed())).await;
    let killed_at = Instant::now();
    // SIGKILL: nothing in the process gets to run after this.
    first.child.start_kill().unwrap();
    let exit = first.child.wait().await.unwrap();
    assert_eq!(exit.signal(), Some(9), "{exit:?}\n{}", first.stderr());
    disable.await.unwrap();
    let registrations = join_all(registrations).await;
    let keys = join_all(keys).await;
    let rotations = join_all(rotations).await;
    let logouts = logouts.await.unwrap();
    let patches = join_all(patches).await;
    let chats = join_all(chats).await;

    let second = Process::serve(&env).await;
    let base = second.base.clone();
    let admin = access(&login(&client, &base, "admin", ADMIN_PASSWORD).await);

    // Registrations: an acknowledged account exists and its password works;
    // one in doubt exists whole or not at all.
    let mut registered = 0;
    for worker in &registrations {
        for (name, id) in &worker.acked {
            let user = get_json(&client, &format!("{base}/admin/users/{id}"), &admin).await;
            assert_eq!(user["username"], name.as_str(), "{user}");
            registered += 1;
        }
        if let Some(name) = &worker.in_doubt {
            let found = get_json(&client, &format!("{base}/admin/users?q={name}"), &admin).await;
            let items = found["items"].as_array().unwrap();
            assert!(items.len() <= 1, "{found}");
            if !items.is_empty() {
                login(&client, &base, name, PASSWORD).await;
            }
        }
    }
    let last = registrations.iter().find_map(|w| w.acked.last()).unwrap();
    login(&client, &base, &last.0, PASSWORD).await;

    // API keys: an acknowledged key works, an acknowledged revocation holds,
    // and what is in doubt is one state or the other in every place.
    let listed = list_keys(&client, &base, &admin).await;
    assert_eq!(key_status(&client, &base, &chat_key).await, StatusCode::OK);
    let mut known = vec![chat_key_id];
    let (mut created, mut revoked) = (0, 0);
    for worker in &keys {
        for (id, secret) in &worker.live {
            assert_eq!(listed_revoked(&listed, id), Some(false), "live key {id}");
            assert_eq!(key_status(&client, &base, secret).await, StatusCode::OK);
            known.push(id.clone());
            created += 1;
        }
        for (id, secret) in &worker.revoked {
            assert_eq!(listed_revoked(&listed, id), Some(true), "revoked key {id}");
            assert_eq!(
                key_status(&client, &base, secret).await,
                StatusCode::UNAUTHORIZED
            );
            known.push(id.clone());
            revoked += 1;
        }
        if let Some((id, secret)) = &worker.revoking {
            let expected = match listed_revoked(&listed, id) {
                Some(true) => StatusCode::UNAUTHORIZED,
                Some(false) => StatusCode::OK,
                None => panic!("key {id} was acknowledged created and is gone"),
            };
            assert_eq!(key_status(&client, &base, secret).await, expected);
            known.push(id.clone());
        }
    }
    let unknown: Vec<&Value> = listed
        .iter()
        .filter(|k| !known.iter().any(|id| k["id"] == id.as_str()))
        .collect();
    let creations_in_doubt: usize = keys.iter().map(|w| w.creating).sum();
    assert!(unknown.len() <= creations_in_doubt, "{unknown:?}");
    for key in unknown {
        assert_eq!(key["permissions"], json!(["tasks.read"]), "{key}");
    }

    // Refresh rotation: the newest acknowledged token works (unless its own
    // rotation was in doubt), and every token rotated away is refused.
    let mut rotated = 0;
    for chain in &rotations {
        let status = refresh_status(&client, &base, &chain.current).await;
        if chain.in_doubt {
            assert!(
                [StatusCode::OK, StatusCode::UNAUTHORIZED].contains(&status),
                "{status}"
            );
        } else {
            assert_eq!(
                status,
                StatusCode::OK,
                "the last acknowledged refresh token"
            );
        }
        let spent = chain.spent.last().expect("the chain rotated at least once");
        assert_eq!(
            refresh_status(&client, &base, spent).await,
            StatusCode::UNAUTHORIZED,
            "a refresh token rotated away"
        );
        rotated += chain.spent.len();
    }

    // Logouts: the tokens of an acknowledged logout stay refused.
    for (access_token, refresh) in &logouts {
        assert_eq!(
            super::me_status(&client, &base, access_token).await,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            refresh_status(&client, &base, refresh).await,
            StatusCode::UNAUTHORIZED
        );
    }

    // Admin changes: the user is as the last acknowledged change left it,
    // or as the one in doubt made it; its role and name always of one change.
    let mut changes = 0;
    for (id, patched) in targets.iter().zip(&patches) {
        let user = get_json(&client, &format!("{base}/admin/users/{id}"), &admin).await;
        let now = (user["full_name"].clone(), user["role"].clone());
        let acceptable: Vec<_> = std::iter::once(patched.acked)
            .chain(patched.in_doubt)
            .map(version)
            .map(|(name, role)| (json!(name), json!(role)))
            .collect();
        assert!(
            acceptable.contains(&now),
            "{user} is none of {acceptable:?}"
        );
        changes += patched.acked;
    }
    // Disabling, acknowledged: the account, its sessions and its keys stay
    // shut.
    let user = get_json(
        &client,
        &format!("{base}/admin/users/{disabled_id}"),
        &admin,
    )
    .await;
    assert_eq!(user["disabled"], true, "{user}");
    let r = client
        .post(format!("{base}/auth/login"))
        .json(&json!({"username": "disabled", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        super::me_status(&client, &base, &access(&disabled_session)).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        refresh_status(&client, &base, &refresh_of(&disabled_session)).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        key_status(&client, &base, &disabled_key.1).await,
        StatusCode::UNAUTHORIZED
    );

    // Usage: every call that finished a flush interval (and the margin)
    // before the kill is counted; nothing is counted that was never sent,
    // and no row is half a record.
    let cutoff = killed_at - Duration::from_millis(FLUSH_MS) - MARGIN;
    let done: Vec<Instant> = chats.iter().flat_map(|c| c.done.iter().copied()).collect();
    let must = done.iter().filter(|at| **at < cutoff).count() as i64;
    let sent: i64 = chats.iter().map(|c| c.sent).sum();
    let usage = get_json(&client, &format!("{base}/usage?group_by=model"), &admin).await;
    let row = &usage["items"][0];
    assert_eq!(row["group"], MODEL, "{usage}");
    let counted = row["requests"].as_i64().unwrap();
    assert!(must > 0, "no call finished before the cutoff");
    assert!(
        (must..=sent).contains(&counted),
        "usage counts {counted} calls; {must} finished before the cutoff, {sent} were sent"
    );
    assert_eq!(
        row["prompt_tokens"].as_i64().unwrap() + row["completion_tokens"].as_i64().unwrap(),
        row["total_tokens"].as_i64().unwrap(),
        "{usage}"
    );
    let mut finished = done.clone();
    finished.sort();
    // How long before the kill the first call not counted finished.
    let lost = finished
        .get(counted as usize)
        .map_or(Duration::ZERO, |first| killed_at - *first);
    eprintln!(
        "acknowledged before the kill: {registered} registrations, {created} keys created, \
         {revoked} revoked, {rotated} refresh rotations, {} logouts, {changes} admin changes, \
         {} chat calls ({must} before the cutoff; {counted} counted, {sent} sent; \
         usage lost over the last {lost:?})",
        logouts.len(),
        done.len()
    );
}

/// The name and role of a target's `v`th acknowledged change (0: as
/// registered).
fn version(v: u32) -> (String, &'static str) {
    (
        format!("Version {v}"),
        if v % 2 == 1 { "viewer" } else { "user" },
    )
}

async fn join_all<T>(tasks: Vec<tokio::task::JoinHandle<T>>) -> Vec<T> {
    let mut out = Vec::new();
    for task in tasks {
        out.push(task.await.unwrap());
    }
    out
}

fn access(session: &Value) -> String {
    session["access_token"].as_str().unwrap().to_string()
}

fn refresh_of(session: &Value) -> String {
    session["refresh_token"].as_str().unwrap().to_string()
}

/// Either the server answered (it must be 2xx: nothing in the storm may
/// fail while the server runs), or the kill cut the request off (`None`).
async fn answered(sent: reqwest::Result<reqwest::Response>, what: &str) -> Option<Value> {
    let r = sent.ok()?;
    let status = r.status();
    let body = r.bytes().await.ok()?;
    assert!(
        status.is_success(),
        "{what}: {status} {}",
        String::from_utf8_lossy(&body)
    );
    Some(serde_json::from_slice(&body).unwrap_or(Value::Null))
}

async fn register(client: &Client, base: &str, name: &str) -> Option<String> {
    let sent = client
        .post(format!("{base}/auth/register"))
        .json(&json!({
            "username": name,
            "email": format!("{name}@example.com"),
            "password": PASSWORD,
            "full_name": version(0).0,
        }))
        .send()
        .await;
    let user = answered(sent, "register").await?;
    Some(user["id"].as_str().unwrap().to_string())
}

/// `(id, secret)` of a new key of the caller's.
async fn create_key(
    client: &Client,
    base: &str,
    token: &str,
    permissions: &[&str],
) -> Option<(String, String)> {
    let sent = client
        .post(format!("{base}/auth/api-keys"))
        .bearer_auth(token)
        .json(&json!({"name": "storm", "permissions": permissions}))
        .send()
        .await;
    let key = answered(sent, "create key").await?;
    Some((
        key["id"].as_str().unwrap().to_string(),
        key["key"].as_str().unwrap().to_string(),
    ))
}

struct Registrations {
    acked: Vec<(String, String)>,
    in_doubt: Option<String>,
}

async fn register_worker(client: Client, base: String, worker: usize) -> Registrations {
    let mut acked = Vec::new();
    for n in 0.. {
        let name = format!("storm{worker}x{n}");
        match register(&client, &base, &name).await {
            Some(id) => acked.push((name, id)),
            None => {
                return Registrations {
                    acked,
                    in_doubt: Some(name),
                }
            }
        }
    }
    unreachable!()
}

#[derive(Default)]
struct Keys {
    live: Vec<(String, String)>,
    revoked: Vec<(String, String)>,
    /// Creations cut off by the kill (0 or 1).
    creating: usize,
    /// A revocation cut off by the kill.
    revoking: Option<(String, String)>,
}

/// Creates keys, revoking every other one as soon as it is acknowledged.
async fn key_worker(client: Client, base: String, admin: String) -> Keys {
    let mut keys = Keys::default();
    loop {
        let Some(key) = create_key(&client, &base, &admin, &["tasks.read"]).await else {
            keys.creating = 1;
            return keys;
        };
        if keys.live.len() > keys.revoked.len() {
            let sent = client
                .delete(format!("{base}/auth/api-keys/{}", key.0))
                .bearer_auth(&admin)
                .send()
                .await;
            if answered(sent, "revoke key").await.is_none() {
                keys.revoking = Some(key);
                return keys;
            }
            keys.revoked.push(key);
        } else {
            keys.live.push(key);
        }
    }
}

struct Chain {
    spent: Vec<String>,
    current: String,
    /// The kill cut off a rotation of `current`.
    in_doubt: bool,
}

async fn refresh_worker(client: Client, base: String, first: String) -> Chain {
    let mut chain = Chain {
        spent: Vec::new(),
        current: first,
        in_doubt: false,
    };
    loop {
        let sent = client
            .post(format!("{base}/auth/refresh"))
            .json(&json!({"refresh_token": chain.current}))
            .send()
            .await;
        let Some(pair) = answered(sent, "refresh").await else {
            chain.in_doubt = true;
            return chain;
        };
        let next = refresh_of(&pair);
        chain
            .spent
            .push(std::mem::replace(&mut chain.current, next));
    }
}

/// Logs in and out again; returns the tokens of every acknowledged logout.
async fn logout_worker(client: Client, base: String) -> Vec<(String, String)> {
    let mut out = Vec::new();
    loop {
        let sent = client
            .post(format!("{base}/auth/login"))
            .json(&json!({"username": "admin", "password": ADMIN_PASSWORD}))
            .send()
            .await;
        let Some(session) = answered(sent, "login").await else {
            return out;
        };
        let sent = client
            .post(format!("{base}/auth/logout"))
            .bearer_auth(access(&session))
            .send()
            .await;
        if answered(sent, "logout").await.is_none() {
            return out;
        }
        out.push((access(&session), refresh_of(&session)));
    }
}

struct Patched {
    acked: u32,
    in_doubt: Option<u32>,
}

/// Changes a user's name and role together, one version after another.
async fn patch_worker(client: Client, base: String, admin: String, id: String) -> Patched {
    for v in 1.. {
        let (name, role) = version(v);
        let sent = client
            .patch(format!("{base}/admin/users/{id}"))
            .bearer_auth(&admin)
            .json(&json!({"full_name": name, "role": role}))
            .send()
            .await;
        if answered(sent, "patch user").await.is_none() {
            return Patched {
                acked: v - 1,
                in_doubt: Some(v),
            };
        }
    }
    unreachable!()
}

struct Chats {
    /// When each acknowledged call's whole response had arrived.
    done: Vec<Instant>,
    sent: i64,
}

async fn chat_worker(client: Client, base: String, key: String, stream: bool) -> Chats {
    let mut chats = Chats {
        done: Vec::new(),
        sent: 0,
    };
    loop {
        chats.sent += 1;
        let sent = client
            .post(format!("{base}/v1/chat/completions"))
            .bearer_auth(&key)
            .json(&json!({
                "model": MODEL,
                "stream": stream,
                "messages": [{"role": "user", "content": "one two three"}],
            }))
            .send()
            .await;
        let Ok(r) = sent else { return chats };
        let status = r.status();
        let Ok(body) = r.bytes().await else {
            return chats;
        };
        assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
        if stream && !body.ends_with(b"data: [DONE]\n\n") {
            // The stream was cut off by the kill: in doubt.
            return chats;
        }
        chats.done.push(Instant::now());
    }
}

async fn get_json(client: &Client, url: &str, token: &str) -> Value {
    let r = client.get(url).bearer_auth(token).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{url}");
    r.json().await.unwrap()
}

/// Every key of the caller's, through all pages.
async fn list_keys(client: &Client, base: &str, token: &str) -> Vec<Value> {
    let mut keys = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut url = format!("{base}/auth/api-keys?limit=100");
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let page = get_json(client, &url, token).await;
        keys.extend(page["items"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => return keys,
        }
    }
}

fn listed_revoked(listed: &[Value], id: &str) -> Option<bool> {
    listed
        .iter()
        .find(|k| k["id"] == id)
        .map(|k| k["revoked"].as_bool().unwrap())
}

async fn key_status(client: &Client, base: &str, secret: &str) -> StatusCode {
    client
        .post(format!("{base}/auth/verify-permission"))
        .header("x-api-key", secret)
        .json(&json!({"permission": "tasks.read"}))
        .send()
        .await
        .unwrap()
        .status()
}

async fn refresh_status(client: &Client, base: &str, token: &str) -> StatusCode {
    client
        .post(format!("{base}/auth/refresh"))
        .json(&json!({"refresh_token": token}))
        .send()
        .await
        .unwrap()
        .status()
}
