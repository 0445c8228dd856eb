//! The configuration's own checks.

use swarmgate_state::Rate;
use swarmgate_tokens::Algorithm;

use super::*;

mod resolving {
    use super::*;

    #[test]
    fn defaults_resolve() {
        let s = Config::default().resolve().unwrap();
        assert_eq!(s.listen.to_string(), "127.0.0.1:8005");
        assert_eq!(s.public_url, "http://127.0.0.1:8005");
        assert_eq!(s.algorithm, Algorithm::EdDSA);
        assert_eq!(s.access_ttl_secs, 86_400);
        assert_eq!(s.refresh_ttl_secs, 30 * 86_400);
        assert_eq!(s.lockout.threshold, 5);
        assert_eq!(s.login_rate, Rate::per_minute(5));
    }

    #[test]
    fn listen_wins_over_port() {
        let mut c = Config::default();
        c.server.port = Some(9000);
        assert_eq!(c.resolve().unwrap().listen.to_string(), "127.0.0.1:9000");
        c.server.listen = Some("0.0.0.0:7000".into());
        assert_eq!(c.resolve().unwrap().listen.to_string(), "0.0.0.0:7000");
    }

    #[test]
    fn short_hs256_secret_is_refused_naming_the_setting() {
        let mut c = Config::default();
        c.tokens.algorithm = "HS256".into();
        c.tokens.secret_key = Some(Secret("short".into()));
        let e = c.resolve().unwrap_err().0;
        assert!(
            e.contains("JWT_SECRET_KEY") && e.contains("32 bytes"),
            "{e}"
        );
        c.tokens.secret_key = Some(Secret("x".repeat(32)));
        assert!(c.resolve().is_ok());
    }

    #[test]
    fn config_roles_are_compiled_and_bad_grants_named() {
        let mut c = Config::default();
        c.roles.insert(
            "auditor".into(),
            RoleConfig {
                permissions: vec!["audit.read".into()],
            },
        );
        let s = c.resolve().unwrap();
        assert!(s
            .roles
            .get("auditor")
            .unwrap()
            .grants
            .allows("audit.read", None, "u"));
        assert!(s.roles.get("admin").is_some());
        c.roles.insert(
            "broken".into(),
            RoleConfig {
                permissions: vec!["tasks.**".into()],
            },
        );
        let e = c.resolve().unwrap_err().0;
        assert!(e.contains("roles.broken") && e.contains("tasks.**"), "{e}");
    }

    #[test]
    fn key_prefixes_that_clash_with_other_credentials_are_refused() {
        for bad in ["e", "ey", "eyJ", "eyJx", "sg", "sgr_", "sgr_x", "a!", ""] {
            let mut c = Config::default();
            c.api_keys.prefix = bad.into();
            assert!(c.resolve().is_err(), "{bad:?}");
        }
        let mut c = Config::default();
        c.api_keys.prefix = "swarm_".into();
        assert!(c.resolve().is_ok());
    }

    #[test]
    fn weak_argon2_and_bad_algorithm_are_refused() {
        let mut c = Config::default();
        c.security.argon2_memory_kib = 1024;
        assert!(c.resolve().unwrap_err().0.contains("argon2_memory_kib"));
        let mut c = Config::default();
        c.tokens.algorithm = "none".into();
        assert!(c.resolve().unwrap_err().0.contains("JWT_ALGORITHM"));
    }
}

mod example_file {
    use figment::providers::{Format, Toml};
    use figment::Figment;

    use super::super::Config;

    #[test]
    fn the_example_file_parses_and_matches_the_defaults() {
        let text = include_str!("../../../../swarmgate.example.toml");
        let parsed: Config = Figment::from(Toml::string(text)).extract().unwrap();
        let from_file = parsed.resolve().unwrap();
        let defaults = Config::default().resolve().unwrap();
        assert_eq!(format!("{from_file:?}"), format!("{defaults:?}"));
    }
}
