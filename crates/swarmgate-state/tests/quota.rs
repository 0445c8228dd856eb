//! The quota meters, once in-process and once on a real Redis
//! (`TEST_REDIS_URL`, two handles standing in for two instances): both
//! back ends must give the same answers.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::too_many_lines,
    reason = "tests: a failed unwrap or index is the failure report"
)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use swarmgate_state::{Adjust, Admission, Meter, SharedState};

fn redis_url() -> Option<String> {
    match std::env::var("TEST_REDIS_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var_os("SWARMGATE_REQUIRE_SERVICES").is_some() => {
            panic!("TEST_REDIS_URL must be set when SWARMGATE_REQUIRE_SERVICES is set")
        }
        _ => None,
    }
}

/// Two handles on one state: the same one twice in-process, two
/// connections on one namespace with Redis.
async fn backends() -> Vec<(SharedState, SharedState)> {
    let memory = SharedState::memory();
    let mut all = vec![(memory.clone(), memory)];
    if let Some(url) = redis_url() {
        let ns = format!("sgquota-{}", swarmgate_core::random::uuid_simple());
        let a = SharedState::redis(&url, &ns, Duration::from_millis(300))
            .await
            .unwrap();
        let b = SharedState::redis(&url, &ns, Duration::from_millis(300))
            .await
            .unwrap();
        all.push((a, b));
    } else {
        eprintln!("TEST_REDIS_URL unset: quota rules checked in-process only");
    }
    all
}

/// Real time, since Redis expires budgets at absolute times.
fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn rpm(key: &str, limit: u64) -> Meter {
    Meter::Rate {
        key: key.into(),
        limit,
        period_ms: 60_000,
        cost: 1,
    }
}

fn budget(key: &str, limit: u64, cost: u64, until_ms: i64, resets: bool) -> Meter {
    Meter::Budget {
        key: key.into(),
        limit,
        cost,
        until_ms,
        resets,
    }
}

fn slot(key: &str, limit: u64, member: &str, until_ms: i64) -> Meter {
    Meter::Slots {
        key: key.into(),
        limit,
        member: member.into(),
        until_ms,
    }
}

fn admitted(a: &Admission) -> bool {
    matches!(a, Admission::Admitted { .. })
}

#[tokio::test]
async fn gcra_admits_the_burst_then_one_per_interval_with_no_boundary_burst() {
    for (a, b) in backends().await {
        let t = now();
        // rpm 5: five at once, alternating instances, then the emission
        // interval (12 s) before the next.
        for i in 0..5 {
            let s = if i % 2 == 0 { &a } else { &b };
            let got = s.quota_admit(&[rpm("u", 5)], t).await.unwrap();
            assert!(admitted(&got), "request {i}: {got:?}");
        }
        assert_eq!(
            a.quota_admit(&[rpm("u", 5)], t).await.unwrap(),
            Admission::Denied {
                index: 0,
                retry_after_ms: Some(12_000)
            }
        );
        // Where a fixed window would open a fresh minute, nothing more.
        for at in [t + 1, t + 6_000, t + 11_999] {
            assert!(!admitted(&b.quota_admit(&[rpm("u", 5)], at).await.unwrap()));
        }
        assert!(admitted(
            &a.quota_admit(&[rpm("u", 5)], t + 12_000).await.unwrap()
        ));
        assert!(!admitted(
            &b.quota_admit(&[rpm("u", 5)], t + 12_001).await.unwrap()
        ));
        // A flood every 100 ms for two minutes gets one per 12 s (at
        // t+24 s … t+120 s), never a fresh burst.
        let mut got = 0;
        for step in 0..1200 {
            let at = t + 12_000 + step * 100;
            if admitted(&a.quota_admit(&[rpm("u", 5)], at).await.unwrap()) {
                got += 1;
            }
        }
        assert_eq!(got, 9, "two minutes at rpm 5");
    }
}

#[tokio::test]
async fn a_wait_is_never_longer_than_the_request_s_own_interval() {
    for (a, b) in backends().await {
        let t = now();
        // Two replicas racing: one charges the burst with a `now` 5 ms
        // later than the one the other read before its turn came.
        for _ in 0..5 {
            assert!(admitted(
                &a.quota_admit(&[rpm("s", 5)], t + 5).await.unwrap()
            ));
        }
        assert_eq!(
            b.quota_admit(&[rpm("s", 5)], t).await.unwrap(),
            Admission::Denied {
                index: 0,
                retry_after_ms: Some(12_000)
            },
            "rpm 5: at most its 12 s interval, not 12.005 s"
        );
    }
}

#[tokio::test]
async fn a_refusal_charges_none_of_the_other_meters() {
    for (a, b) in backends().await {
        let t = now();
        let held = a
            .quota_admit(&[slot("conc", 1, "r1", t + 60_000)], t)
            .await
            .unwrap();
        assert!(admitted(&held));
        let got = b
            .quota_admit(
                &[
                    rpm("rpm", 3),
                    budget("day", 100, 10, t + 60_000, true),
                    slot("conc", 1, "r2", t + 60_000),
                ],
                t,
            )
            .await
            .unwrap();
        assert_eq!(
            got,
            Admission::Denied {
                index: 2,
                retry_after_ms: Some(1000)
            }
        );
        let read = a
            .quota_read(&[rpm("rpm", 3), budget("day", 100, 0, t + 60_000, true)], t)
            .await
            .unwrap();
        assert_eq!((read[0].used, read[0].remaining), (0, 3));
        assert_eq!((read[1].used, read[1].remaining), (0, 100));
    }
}

#[tokio::test]
async fn reservations_settle_to_what_was_used() {
    for (a, b) in backends().await {
        let t = now();
        let until = t + 60_000;
        let got = a
            .quota_admit(&[budget("d", 100, 60, until, true)], t)
            .await
            .unwrap();
        assert_eq!(
            got,
            Admission::Admitted {
                remaining: vec![40]
            }
        );
        // The rest of the day does not fit a second worst case.
        match b
            .quota_admit(&[budget("d", 100, 50, until, true)], t)
            .await
            .unwrap()
        {
            Admission::Denied {
                index: 0,
                retry_after_ms: Some(ms),
            } => assert!(ms > 59_000 && ms <= 60_000, "{ms}"),
            other => panic!("{other:?}"),
        }
        // 20 of the 60 were used.
        a.quota_settle(
            &[Adjust::Budget {
                key: "d".into(),
                refund: 40,
                until_ms: until,
            }],
            t,
        )
        .await
        .unwrap();
        let got = b
            .quota_admit(&[budget("d", 100, 80, until, true)], t)
            .await
            .unwrap();
        assert_eq!(got, Admission::Admitted { remaining: vec![0] });
        // Using more than reserved charges the excess.
        a.quota_settle(
            &[Adjust::Budget {
                key: "d".into(),
                refund: -5,
                until_ms: until,
            }],
            t,
        )
        .await
        .unwrap();
        let read = a
            .quota_read(&[budget("d", 200, 0, until, true)], t)
            .await
            .unwrap();
        assert_eq!(read[0].used, 105);
        // An allocation that is spent does not come back by waiting.
        assert_eq!(
            a.quota_admit(&[budget("alloc", 10, 11, until, false)], t)
                .await
                .unwrap(),
            Admission::Denied {
                index: 0,
                retry_after_ms: None
            }
        );
    }
}

#[tokio::test]
async fn token_rates_refund_and_refuse_what_can_never_fit() {
    for (a, b) in backends().await {
        let t = now();
        let tpm = |cost| Meter::Rate {
            key: "tpm".into(),
            limit: 1000,
            period_ms: 60_000,
            cost,
        };
        assert_eq!(
            a.quota_admit(&[tpm(1001)], t).await.unwrap(),
            Admission::Denied {
                index: 0,
                retry_after_ms: None
            }
        );
        assert_eq!(
            a.quota_admit(&[tpm(800)], t).await.unwrap(),
            Admission::Admitted {
                remaining: vec![200]
            }
        );
        assert!(!admitted(&b.quota_admit(&[tpm(300)], t).await.unwrap()));
        b.quota_settle(
            &[Adjust::Rate {
                key: "tpm".into(),
                limit: 1000,
                period_ms: 60_000,
                refund: 700,
            }],
            t,
        )
        .await
        .unwrap();
        assert_eq!(
            b.quota_admit(&[tpm(300)], t).await.unwrap(),
            Admission::Admitted {
                remaining: vec![600]
            }
        );
    }
}

#[tokio::test]
async fn slots_are_released_lapse_and_can_be_kept_alive() {
    for (a, b) in backends().await {
        let t = now();
        assert!(admitted(
            &a.quota_admit(&[slot("c", 2, "x", t + 5_000)], t)
                .await
                .unwrap()
        ));
        assert!(admitted(
            &b.quota_admit(&[slot("c", 2, "y", t + 60_000)], t)
                .await
                .unwrap()
        ));
        assert!(!admitted(
            &a.quota_admit(&[slot("c", 2, "z", t + 60_000)], t)
                .await
                .unwrap()
        ));
        b.quota_settle(
            &[Adjust::Release {
                key: "c".into(),
                member: "y".into(),
            }],
            t,
        )
        .await
        .unwrap();
        assert!(admitted(
            &a.quota_admit(&[slot("c", 2, "z", t + 60_000)], t)
                .await
                .unwrap()
        ));
        // "x" was never released: its hold lapses at t + 5 s.
        assert!(!admitted(
            &b.quota_admit(&[slot("c", 2, "w", t + 60_000)], t + 4_999)
                .await
                .unwrap()
        ));
        assert!(admitted(
            &b.quota_admit(&[slot("c", 2, "w", t + 60_000)], t + 5_000)
                .await
                .unwrap()
        ));
        // Touch extends a live hold, and not a lapsed or released one.
        assert!(admitted(
            &a.quota_admit(&[slot("agents", 5, "s1", t + 1_000)], t)
                .await
                .unwrap()
        ));
        assert!(b
            .quota_touch("agents", "s1", t + 10_000, t + 500)
            .await
            .unwrap());
        assert!(a
            .quota_touch("agents", "s1", t + 10_000, t + 9_000)
            .await
            .unwrap());
        assert!(!a
            .quota_touch("agents", "s1", t + 30_000, t + 10_000)
            .await
            .unwrap());
        assert!(!a
            .quota_touch("agents", "never", t + 30_000, t)
            .await
            .unwrap());
    }
}

#[tokio::test]
async fn large_limits_are_exact_and_huge_costs_refused_alike() {
    for (a, b) in backends().await {
        let t = now();
        let tpm = |cost| Meter::Rate {
            key: "big".into(),
            limit: 40_000_000,
            period_ms: 60_000,
            cost,
        };
        assert!(admitted(
            &a.quota_admit(&[tpm(40_000_000)], t).await.unwrap()
        ));
        assert!(!admitted(&b.quota_admit(&[tpm(1)], t).await.unwrap()));
        // Half a minute refills half the limit, not more.
        assert!(!admitted(
            &b.quota_admit(&[tpm(20_000_001)], t + 30_000).await.unwrap()
        ));
        assert!(admitted(
            &b.quota_admit(&[tpm(20_000_000)], t + 30_000).await.unwrap()
        ));
        // Units left are exact even where limit × microseconds is beyond
        // a Lua number's 2^53. (One microsecond is 15 units of this limit:
        // a cost of 7 is rounded up to it, never down.)
        let vast = Meter::Rate {
            key: "vast".into(),
            limit: 900_000_000,
            period_ms: 60_000,
            cost: 7,
        };
        assert_eq!(
            b.quota_admit(std::slice::from_ref(&vast), t).await.unwrap(),
            Admission::Admitted {
                remaining: vec![899_999_985]
            }
        );
        assert_eq!(
            a.quota_read(&[vast], t).await.unwrap()[0].remaining,
            899_999_985
        );
        // A cost no limit could hold: refused for good, on both back ends.
        for cost in [u64::MAX, u64::MAX / 2, 1 << 40] {
            let huge = Meter::Budget {
                key: "day".into(),
                limit: 100,
                cost,
                until_ms: t + 60_000,
                resets: true,
            };
            assert_eq!(
                a.quota_admit(&[tpm(cost), huge], t).await.unwrap(),
                Admission::Denied {
                    index: 0,
                    retry_after_ms: None
                }
            );
        }
        // Going over a reservation long after it was made is charged from
        // now, in full.
        let small = |cost| Meter::Rate {
            key: "late".into(),
            limit: 100,
            period_ms: 60_000,
            cost,
        };
        assert!(admitted(&a.quota_admit(&[small(10)], t).await.unwrap()));
        b.quota_settle(
            &[Adjust::Rate {
                key: "late".into(),
                limit: 100,
                period_ms: 60_000,
                refund: -50,
            }],
            t + 120_000,
        )
        .await
        .unwrap();
        let read = a.quota_read(&[small(0)], t + 120_000).await.unwrap();
        assert_eq!(read[0].remaining, 50, "the 50 over are owed from now");
    }
}

#[tokio::test]
async fn a_settlement_marked_once_applies_once() {
    for (a, b) in backends().await {
        let t = now();
        let until = t + 60_000;
        assert!(admitted(
            &a.quota_admit(&[budget("parent-day", 100, 60, until, true)], t)
                .await
                .unwrap()
        ));
        let give_back = [
            Adjust::Once {
                key: "end:s1".into(),
                until_ms: until,
            },
            Adjust::Budget {
                key: "parent-day".into(),
                refund: 50,
                until_ms: until,
            },
        ];
        assert!(a.quota_settle(&give_back, t).await.unwrap());
        // A retry (another instance, the sweep) gives nothing back again.
        assert!(!b.quota_settle(&give_back, t).await.unwrap());
        let read = b
            .quota_read(&[budget("parent-day", 100, 0, until, true)], t)
            .await
            .unwrap();
        assert_eq!(read[0].used, 10);
    }
}
